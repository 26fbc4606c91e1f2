//go:build !(cgo && unix)

package probe

import (
	"errors"

	"github.com/miekg/pkcs11"
)

// readArrayAttribute needs cgo on Unix; elsewhere array attributes are
// reported unreadable.
func readArrayAttribute(module string, s pkcs11.SessionHandle, h pkcs11.ObjectHandle, typ uint) ([]rawAttr, bool, error) {
	return nil, false, errors.New("reading array attributes needs cgo on a Unix system")
}

// arrayAttribute needs cgo on Unix; elsewhere it returns nil.
func arrayAttribute(typ uint, entries []*pkcs11.Attribute) (*pkcs11.Attribute, func()) {
	return nil, func() {}
}
