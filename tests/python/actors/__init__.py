# Modules whose functions the test suite runs inside child actors (importable by name in every backend).
