"""Suite-wide test settings."""

import os

# Decoding's split products are chosen per machine by a timing (flamingo_core.linear); tests take them always, as
# before that choice existed, so results do not depend on a measurement and nothing is cached under ~/.cache.
os.environ.setdefault("FLAMINGO_ROW_SPLIT", "always")
