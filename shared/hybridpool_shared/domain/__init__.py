"""Pure domain maths shared by services: no I/O here."""
