"""Every ``st.session_state`` key of the dashboard that is not a widget's own: named once, here.

A key written in one file and read in another (the Train form's preview image, read again by Resume) cannot
drift apart, and a new key cannot take a name already in use.
"""

PROJECT = "project"  # the open project's name; also the URL query parameter that keeps it across reloads
USER = "dashboard_user"  # who uses this session (None while access control is off)
LOGIN_USER = "impartial_user"  # who logged in with a password (dashboard.access)
DEMO_OFFERED = "demo_offered"  # the --demo project was opened once in this session
PREVIEW_IMAGE = "preview_image"  # the Train form's preview image (a select box); Resume previews it too
RESULTS_IMAGE = "results_image"  # the Results page's image (a select box)
RESULTS_NEW_IMAGE = "results_new_image"  # an image just added on the Results page, chosen at the next rerun
DELETE_PROJECT_CONFIRM = "delete_project_confirm"  # the typed name that confirms deleting a project (a text box)
UPLOAD_GENERATION = "upload_generation"  # part of the Dataset uploaders' keys: a new one empties them
UPLOAD_MESSAGES = "upload_messages"  # what the last upload said, shown after the rerun it causes
OUTSIDE_PREDICTIONS = "outside_predictions"  # predictions of images from outside the project (Results page)
SCRIBBLE_GOTO = "scribble_goto"  # a region the Scribble canvas should show (a suggestion's button sets it)
LIVE_MODE_ERROR = "live_mode_error"  # why live mode could not start, shown after the button's rerun
SCRIBBLE_ACKED_OPS = "scribble_acked_ops"  # canvas edits already applied, so a resent one is not applied twice
