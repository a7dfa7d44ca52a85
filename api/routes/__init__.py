"""Route modules: each validates, authenticates, calls the engine and maps the result."""
