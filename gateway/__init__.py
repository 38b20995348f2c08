"""The web gateway: the browser surface, supervised beside the actors and outside the media
path (``server.Gateway``; its page lives in ``static/``). ``python -m gateway`` runs it."""
