"""One folder per client API (chat, messages, responses): its schema, its translation to and
from the pipeline's chat completions, its streams and wire, and the front object that calls
the pipeline through `gateway.core.Front`. Fronts import only the core and the packages below
it; the HTTP layer mounts them."""
