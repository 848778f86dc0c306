#!/bin/sh
echo "Content-Type: text/plain"
echo ""
cat /var/lambda/code
