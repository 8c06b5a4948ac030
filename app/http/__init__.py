"""The HTTP face of the service: the app factory and its lifespan (``factory``), the routes (``routes``,
``ag_ui``, ``page``), the request and response bodies (``schemas``), problems (``problems``), limits and the
page's files (``web``). Everything here is FastAPI; the rooms below it (``app.rounds``, ``app.sessions``,
``app.llm``) know nothing of HTTP."""
