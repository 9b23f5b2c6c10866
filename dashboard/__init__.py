"""The web UI: a Dash app that polls the collector and draws the three embedding panels.

Never imports torch, PaCMAP or the trainer plugin. It holds no server-side state: what it
remembers between polls (last seen version, status) lives in ``dcc.Store`` in the browser.
"""
