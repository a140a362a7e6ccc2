"""The pipeline's entry points and stages.

Ray Train's placement-group cleaner asks Ray's State API every second whether the training
controller lives. A local head runs no dashboard, so the State API is absent, and the cleaner
logs a warning at each try, which would bury the driver's progress bars under one line a second.
Ray reads RAY_DEDUP_LOGS_SKIP_REGEX when it is first imported, and then drops matching worker lines
before it prints them. So it is set here, before any module of this package imports Ray. A value
the user set wins.
"""

import os

STATE_API_WARNING = "Failed to query Ray Train Controller actor state"
os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", STATE_API_WARNING)
