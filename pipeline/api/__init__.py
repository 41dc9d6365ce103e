"""kokoro-engine serve's server shell (Starlette on uvicorn; the CLI is pipeline/cli/serve.py).

routes.py      every route, in one table; WebSocket handlers get (authenticated ws, hub)
app.py         the ASGI app: Host check -> CORS (if configured) -> token on HTTP -> routes
auth.py        the token on HTTP and the three WebSocket ways, in constant time
exposure.py    the bind rule (loopback unless --allow-remote) and the Host check
session_token.py  where the token comes from: stdin, the environment, a 0600 file
sessions.py    the open WebSockets, told and closed at shutdown
server.py      uvicorn with our socket, ready hook and shutdown order
logs.py        stderr logging with the token and query strings redacted
errors.py      the error envelope (seed 002 §2.3)
state.py       what the routes share
"""
