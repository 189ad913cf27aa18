"""mixtral_trt.serve: an OpenAI- and Mistral-compatible HTTP server over one engine.

    mixtral-export serve ENGINE --port 8000             # or, in Python:
    from mixtral_trt.serve.server import serve
    serve("engines/mixtral-ort", port=8000, api_key="sk-...")

Requests share engine steps through `runtime.scheduler.Scheduler` (iteration-level batching). The runtime
never imports this package; FastAPI, uvicorn and prometheus-client (the `serve` extra) are imported only
when an app is made.
"""
