"""The sessionkeeper demo: every cookie and session example of the classic Flask
tutorials, running on any session store chosen by one environment variable.

Run it from the repository root::

    pip install -e '.[demo]' && gunicorn -w 2 -b 127.0.0.1:5000 demo.app:app

See docs/demo.md. This package imports nothing on purpose: ``demo.app`` builds the app
when imported, and ``demo.config`` must stay importable without doing so.
"""
