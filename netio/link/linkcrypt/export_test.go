package linkcrypt

// Counter exposes the counter arithmetic to the tests of the documented example.
var Counter = (*Cipher).counter
