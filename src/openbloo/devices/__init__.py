"""The database side of devices: health, callbacks, applying device news, reconciliation, opt-outs.

Transports (:mod:`openbloo.transports`) talk to devices and never touch the database; the modules here
take what a device reported and write it through the writer, as units of work.
"""
