"""The wire: every gRPC port and channel of a node, and the hops between gRPC threads
and the reactor. Credentials plug in at one point, `Wire` (jobsched.net.channels)."""
