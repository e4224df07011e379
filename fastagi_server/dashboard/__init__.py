"""The web dashboard (issue 17): live calls, call history, call detail and charts.

Its own process (``agi-voice dashboard``; ``serve`` runs it as a child), so nothing it does can
delay a call. It reads the call store (:mod:`media_sidecar.store`), the recordings the media
plane wrote, and each media worker's ``/calls`` (its health listener) for the live view.

- :mod:`.app`: the Starlette application (pages, JSON, server-sent events, recordings);
- :mod:`.auth`: the login, its signed cookie, the security headers;
- :mod:`.live`: polling the workers' live calls;
- :mod:`.views` and :mod:`.charts`: what the pages show (pure);
- :mod:`.server`: the process (uvicorn).
"""
