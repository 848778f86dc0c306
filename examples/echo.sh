#!/bin/sh
# Echo the event back, wrapped in an object.
printf '{"echo": %s}\n' "$(cat)"
