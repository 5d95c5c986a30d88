"""Forward hypervisor guest lifecycle events to an AMQP topic, and subscribe to them."""
