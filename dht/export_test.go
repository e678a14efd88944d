package dht

// SetLegacyRecords makes a node behave as one from before record extensions
// (see Config.legacyRecords), for the compatibility tests.
func SetLegacyRecords(c *Config) { c.legacyRecords = true }
