# Test configuration: the suite runs through the package's own pytest plugin (the pytest11 entry point when the
# package is installed; loaded by name here for the in-tree build).
import sys

pytest_plugins = [] if 'subactor._testing.plugin' in sys.modules else ['subactor._testing.plugin']
