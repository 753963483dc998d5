# Test support shipped with the package: the pytest plugin (registered as the `pytest11` entry point `subactor`).
