"""Ray Serve applications: `vlm` (the batched VLM deployment) and `api` (the HTTP ingress)."""

# How often a stopping replica looks for requests still in flight (Serve's default: 2 s, and
# it sleeps once before the first look). The cameras have drained before the apps stop.
SHUTDOWN_LOOK_S = 0.5
