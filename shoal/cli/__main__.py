"""`python -m shoal.cli`, as the tests and a checkout without the entry point run it."""

from shoal.cli import main

main()
