//go:build !unix

package session

import "errors"

// canWriteFD: elsewhere a socket's handle is not a non-blocking descriptor,
// so every frame goes through a writer.
const canWriteFD = false

func writeFD(uintptr, []byte) (int, error) { return 0, errors.ErrUnsupported }
