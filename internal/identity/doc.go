// Package identity builds and publishes the account identities this PDS
// hosts: did:plc genesis operations (signing, DID derivation, signature
// checks), the DID documents that describe an account, and a small client
// for a PLC directory.
//
// Every protocol primitive comes from indigo: [syntax] for DIDs and handles,
// [atcrypto] for keys, did:key strings and signatures, and [atdata] for
// canonical DAG-CBOR.
//
// [syntax]: https://pkg.go.dev/github.com/bluesky-social/indigo/atproto/syntax
// [atcrypto]: https://pkg.go.dev/github.com/bluesky-social/indigo/atproto/atcrypto
// [atdata]: https://pkg.go.dev/github.com/bluesky-social/indigo/atproto/atdata
package identity
