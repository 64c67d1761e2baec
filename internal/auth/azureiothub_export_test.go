package auth

// IoTHubSig is the signature step of IoTHubSAS alone, for the SDKs' published vectors.
var IoTHubSig = iotHubSig

// IoTHubCached is how many devices' tokens s holds.
func IoTHubCached(s *AzureIoTHub) int { return s.cached() }
