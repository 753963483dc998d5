# A module that starts a thread when imported: the fork server must refuse to fork after preloading it.
import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, name='started-at-import', daemon=True).start()
