"""The web side: the aiohttp app, its HTTP views, the browser WebSocket."""
