package virtionet

// TxHeaderCheck exposes the TX path's header policy to the external tests
// (txcheck_test.go).
var TxHeaderCheck = txHeaderCheck
