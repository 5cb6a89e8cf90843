"""Every Ray import of the gateway: the state owners (keys, records) as Serve deployments,
replica states, and what keeps a deployment from being exposed by mistake."""
