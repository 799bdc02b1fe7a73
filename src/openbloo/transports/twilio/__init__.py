"""Twilio Programmable Messaging (SMS/MMS): REST client, transport, and the callbacks' pure functions."""

from openbloo.transports.twilio.callbacks import (
    MESSAGE_ID_PARAM,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    SIGNATURE_HEADER,
    TWIML_CONTENT_TYPE,
    compute_signature,
    empty_twiml,
    opt_out_action,
    parse_inbound,
    parse_status_callback,
    verify_signature,
)
from openbloo.transports.twilio.client import DEFAULT_API_URL, TwilioClient, mask_secret
from openbloo.transports.twilio.transport import (
    MAX_BODY_CHARS,
    MAX_MEDIA,
    TwilioTransport,
    callback_url_for,
    check_number,
)

__all__ = [
    "DEFAULT_API_URL",
    "MAX_BODY_CHARS",
    "MAX_MEDIA",
    "MESSAGE_ID_PARAM",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "SIGNATURE_HEADER",
    "TWIML_CONTENT_TYPE",
    "TwilioClient",
    "TwilioTransport",
    "callback_url_for",
    "check_number",
    "compute_signature",
    "empty_twiml",
    "mask_secret",
    "opt_out_action",
    "parse_inbound",
    "parse_status_callback",
    "verify_signature",
]
