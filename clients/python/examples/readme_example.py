from mycosynth import ConfigClient

config = ConfigClient()  # the sidecar at $MYCOSYNTH_SIDECAR_URL, default http://127.0.0.1:8686
pool_size = config.get_int("database.pool_size", min_val=1, max_val=200)
dark_mode = config.get_bool("feature.dark_mode", default=False)
timeout_ms = config.get("http.timeout_ms", default=250)
config.on_change(lambda change: print("changed:", change.keys, "now version", change.version))
print(f"pool {pool_size}, dark mode {dark_mode}, timeout {timeout_ms} ms, version {config.version}")
