#!/bin/sh
# Like the agent: on SIGTERM keep serving for a moment (the controller takes the task out of the
# endpoints meanwhile), then stop.
/bin/httpd -f -p 8080 -h /www &
pid=$!
trap 'sleep 1.8; kill $pid; exit 0' TERM
wait $pid
