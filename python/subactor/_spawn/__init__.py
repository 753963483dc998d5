# Spawn backends: how a child actor's process or interpreter is started, watched and killed.
