package linkcrypt

// Counter exposes the counter arithmetic to the tests of the documented example.
func Counter(c *Cipher, d int, n uint64) [IVSize]byte {
	var b [IVSize]byte
	hi, lo := c.counter(d, n)
	putBlock(b[:], hi, lo)
	return b
}
