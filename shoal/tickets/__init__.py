"""Support tickets, in one place: the `[tickets]` settings (taxonomy, entities, routes), the reply
drafter, the fixed plan and its specialists, reading and writing ticket files, and the triage
driver the engine delegates to.

Import from the submodules (`shoal.tickets.files`, `.plan`, `.reply`, `.triage`); this package
itself loads only the settings, because `shoal.config` reads them and everything reads config.
"""

from shoal.tickets.settings import Route, TicketSettings

__all__ = ["Route", "TicketSettings"]
