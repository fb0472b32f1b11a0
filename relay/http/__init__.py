"""The HTTP surface: a plain Starlette app (``build_app``) over a ``Backend``; Ray Serve only wraps it."""
