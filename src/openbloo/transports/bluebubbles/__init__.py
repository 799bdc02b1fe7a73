"""BlueBubbles Server (iMessage from a Mac): the wire format, the REST client, the transport."""
