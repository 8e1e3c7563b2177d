"""The Batch API: batch files of requests run through the gateway at a lower priority."""
