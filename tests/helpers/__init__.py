"""Plain helpers the test areas share: functions and classes called in test bodies, importable as
``helpers.<topic>`` (``tests`` is on pytest's ``pythonpath``). Fixtures live in ``conftest.py``
files instead: ``tests/conftest.py`` for those several areas use, an area's own for the rest.

- ``common``: prerequisites (``require``), free ports, work directories, the environment of a
  project on the session servers (``settings_env``) and the real CLI (``run_cli``);
- ``api``: spans stored the way the collector stores them, projects and keys, the API in-process
  or as a subprocess;
- ``collector``: ``llmobs serve collector`` as a subprocess, OTLP requests and exports;
- ``backup``: a PostgreSQL cluster with WAL archiving, a moto S3 server;
- ``local``: a local-runtime project's status, processes and database;
- ``compose``: the Docker engine, offline images and compose test projects;
- ``rotation``: clients that keep using a stack while its secrets rotate;
- ``fake_openai``, ``genai_driver``, ``genai_signals_driver``: a fake OpenAI server and the scripts
  that drive real GenAI instrumentations against it.

A module's name must not be that of a standard or installed module (``secrets``, ``json``, ...):
the drivers run as scripts from this folder, which puts it first on their ``sys.path``.
"""
