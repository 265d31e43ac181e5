"""`shoal serve`: the HTTP API a helpdesk calls (FastAPI on uvicorn), with bearer tokens,
request limits, Prometheus metrics and webhook delivery. Loaded only by `shoal serve` and by
code that builds the app itself (`shoal.serve.app.create_app`): FastAPI is the `serve` extra.

- `app.py`      the app factory: routes, error bodies, the lifespan that runs the workers
- `auth.py`     bearer tokens (hashed in the store), per-token rate limit
- `limits.py`   the request body limit, enforced before a handler reads the body
- `intake.py`   submitted tickets on the work queue; the server's own worker (unless --no-worker)
- `metrics.py`  /metrics: what the database holds, read at scrape time
- `schemas.py`  request and response bodies (the OpenAPI document at /docs is built from them)
"""
