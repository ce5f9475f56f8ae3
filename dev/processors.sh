#!/usr/bin/env bash
# The processors `make dev` runs, in pipeline order.
echo passthrough
echo templates
echo ratelimit
echo fanout
echo retry
