"""The pipeline: authenticate, route, call backends with fallbacks and retries, relay,
account. Plain Python: no Ray and no web framework (`tests/unit/test_import_graph.py`); the
fronts (`gateway.fronts`) call it, the HTTP layer (`gateway.http`) and the Serve glue
(`gateway.serve`) only adapt it. Its own request language is chat completions."""
