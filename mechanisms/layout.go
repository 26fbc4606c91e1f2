package mechanisms

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/miekg/pkcs11"
)

// abi describes the C data model the layouts are computed for. The package
// uses nativeABI (from cgo); tests also compute layouts for other data models.
type abi struct {
	ulongSize, ulongAlign uintptr // CK_ULONG = unsigned long
	ptrSize, ptrAlign     uintptr // any data pointer
}

// kind says how a Go field becomes C members.
type kind uint8

const (
	// kindULong: a Go unsigned integer becomes one CK_ULONG.
	kindULong kind = iota + 1
	// kindBBool: a Go bool becomes one CK_BBOOL (CK_TRUE = 1, CK_FALSE = 0).
	kindBBool
	// kindBytes: a Go [N]byte becomes CK_BYTE[N], inline.
	kindBytes
	// kindRef: a Go slice, pointer or interface becomes a pointer member and
	// a CK_ULONG length member, in the order the tag names them. The data is
	// placed in C memory: a []byte as bytes (length = byte count), a slice
	// of structures as a C array (length = element count), a pointer to one
	// structure as that structure (length = its C size). Empty or nil gives
	// NULL_PTR and 0.
	kindRef
	// kindOut: a Go unsigned integer becomes a pointer to a CK_ULONG in C
	// memory that the token writes; its value is copied back after the call.
	kindOut
)

// member is one C member of a structure.
type member struct {
	name   string
	offset uintptr
	size   uintptr
}

// field maps one Go field to its C member(s).
type field struct {
	goName string
	index  int // Go field index; -1 for a type that is a single CK_ULONG
	kind   kind
	c      member // the member; for kindRef the pointer member
	length member // kindRef: the length member
}

// layout is the C layout of one Go type.
type layout struct {
	goType reflect.Type
	cName  string
	size   uintptr
	align  uintptr
	fields []field
	check  bool // goType implements validator
}

// members returns every C member of the layout, in Go field order.
func (l *layout) members() []member {
	var ms []member
	for _, f := range l.fields {
		if f.index < 0 {
			continue
		}
		switch {
		case f.kind == kindRef && f.c.offset < f.length.offset:
			ms = append(ms, f.c, f.length)
		case f.kind == kindRef:
			ms = append(ms, f.length, f.c)
		default:
			ms = append(ms, f.c)
		}
	}
	return ms
}

func alignUp(n, a uintptr) uintptr { return (n + a - 1) &^ (a - 1) }

// buildLayout computes the C layout of t for data model a. tags, if not nil,
// replaces the p11 struct tags (for types of other packages). Scalar types
// (unsigned integers) are a single CK_ULONG.
func buildLayout(t reflect.Type, cName string, tags []string, a abi) (*layout, error) {
	l := &layout{goType: t, cName: cName, check: t.Implements(validatorType)}
	if isUnsigned(t.Kind()) {
		l.size, l.align = a.ulongSize, a.ulongAlign
		l.fields = []field{{goName: t.Name(), index: -1, kind: kindULong, c: member{offset: 0, size: a.ulongSize}}}
		return l, nil
	}
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%v: not a struct or unsigned integer", t)
	}
	if tags != nil && len(tags) != t.NumField() {
		return nil, fmt.Errorf("%v: %d tags for %d fields", t, len(tags), t.NumField())
	}
	p := &placer{abi: a, align: 1}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("p11")
		if tags != nil {
			tag = tags[i]
		}
		if tag == "" {
			return nil, fmt.Errorf("%v.%s: no p11 tag", t, sf.Name)
		}
		f, err := p.field(t, sf, i, tag)
		if err != nil {
			return nil, err
		}
		l.fields = append(l.fields, f)
	}
	l.align = p.align
	l.size = alignUp(p.end, l.align)
	return l, nil
}

// placer lays out the C members of a struct one after the other.
type placer struct {
	abi
	end   uintptr // the end of the last member placed
	align uintptr // the struct's alignment so far
}

// place places the next member, of that size and alignment.
func (p *placer) place(name string, size, align uintptr) member {
	off := alignUp(p.end, align)
	p.end = off + size
	p.align = max(p.align, align)
	return member{name: name, offset: off, size: size}
}

// field maps field i of struct t, sf, to the C members its p11 tag names,
// and places them.
func (p *placer) field(t reflect.Type, sf reflect.StructField, i int, tag string) (field, error) {
	a := p.abi
	f := field{goName: sf.Name, index: i}
	if !strings.Contains(tag, ":") {
		switch k := sf.Type.Kind(); {
		case isUnsigned(k):
			f.kind, f.c = kindULong, p.place(tag, a.ulongSize, a.ulongAlign)
		case k == reflect.Bool:
			f.kind, f.c = kindBBool, p.place(tag, 1, 1)
		case k == reflect.Array && sf.Type.Elem().Kind() == reflect.Uint8:
			f.kind, f.c = kindBytes, p.place(tag, uintptr(sf.Type.Len()), 1)
		default:
			return f, fmt.Errorf("%v.%s: cannot map %v to a C scalar", t, sf.Name, sf.Type)
		}
		return f, nil
	}
	parts := strings.Split(tag, ",")
	if len(parts) == 1 && strings.HasPrefix(parts[0], "out:") {
		if !isUnsigned(sf.Type.Kind()) {
			return f, fmt.Errorf("%v.%s: out field must be an unsigned integer", t, sf.Name)
		}
		f.kind, f.c = kindOut, p.place(strings.TrimPrefix(parts[0], "out:"), a.ptrSize, a.ptrAlign)
		return f, nil
	}
	if len(parts) != 2 {
		return f, fmt.Errorf("%v.%s: bad p11 tag %q", t, sf.Name, tag)
	}
	switch sf.Type.Kind() {
	case reflect.Slice, reflect.Pointer, reflect.Interface:
	default:
		return f, fmt.Errorf("%v.%s: pointer/length field must be a slice, pointer or interface, not %v", t, sf.Name, sf.Type)
	}
	f.kind = kindRef
	seen := 0
	for _, part := range parts {
		role, name, _ := strings.Cut(part, ":")
		switch role {
		case "ptr":
			f.c = p.place(name, a.ptrSize, a.ptrAlign)
			seen |= 1
		case "len":
			f.length = p.place(name, a.ulongSize, a.ulongAlign)
			seen |= 2
		default:
			return f, fmt.Errorf("%v.%s: bad p11 tag %q", t, sf.Name, tag)
		}
	}
	if seen != 3 {
		return f, fmt.Errorf("%v.%s: p11 tag %q needs one ptr: and one len:", t, sf.Name, tag)
	}
	return f, nil
}

func isUnsigned(k reflect.Kind) bool {
	switch k {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

var validatorType = reflect.TypeFor[validator]()

// registration names the C type of a Go type.
type registration struct {
	t     reflect.Type
	cName string
	tags  []string // nil: use the struct tags
}

// registrations lists every Go type the marshaller can lay out: the Params
// types and the structures they point to.
var registrations = []registration{
	{reflect.TypeFor[KeyDerivationStringData](), "CK_KEY_DERIVATION_STRING_DATA", nil},
	{reflect.TypeFor[AESCBCEncryptDataParams](), "CK_AES_CBC_ENCRYPT_DATA_PARAMS", nil},
	{reflect.TypeFor[DESCBCEncryptDataParams](), "CK_DES_CBC_ENCRYPT_DATA_PARAMS", nil},
	{reflect.TypeFor[MACGeneralParams](), "CK_MAC_GENERAL_PARAMS", nil},
	{reflect.TypeFor[AESCTRParams](), "CK_AES_CTR_PARAMS", nil},
	{reflect.TypeFor[prfData](), "CK_PRF_DATA_PARAM", nil},
	{reflect.TypeFor[CounterFormat](), "CK_SP800_108_COUNTER_FORMAT", nil},
	{reflect.TypeFor[DKMLength](), "CK_SP800_108_DKM_LENGTH_FORMAT", nil},
	{reflect.TypeFor[DerivedKey](), "CK_DERIVED_KEY", nil},
	{reflect.TypeFor[SP800108KDFParams](), "CK_SP800_108_KDF_PARAMS", nil},
	{reflect.TypeFor[SP800108FeedbackKDFParams](), "CK_SP800_108_FEEDBACK_KDF_PARAMS", nil},
	{reflect.TypeFor[HKDFParams](), "CK_HKDF_PARAMS", nil},
	// miekg's Attribute{Type uint; Value []byte} is exactly CK_ATTRIBUTE.
	{reflect.TypeFor[pkcs11.Attribute](), "CK_ATTRIBUTE", []string{"type", "ptr:pValue,len:ulValueLen"}},
}

// union describes an interface type whose values are converted to a
// registered structure before marshalling (a C tagged union).
type union struct {
	wire reflect.Type
	conv func(reflect.Value) (reflect.Value, error)
}

var (
	layouts = map[reflect.Type]*layout{}
	unions  = map[reflect.Type]union{
		reflect.TypeFor[PRFDataParam](): {
			wire: reflect.TypeFor[prfData](),
			conv: func(v reflect.Value) (reflect.Value, error) {
				d, err := v.Interface().(PRFDataParam).prfData()
				return reflect.ValueOf(d), err
			},
		},
	}
)

func init() {
	for _, r := range registrations {
		l, err := buildLayout(r.t, r.cName, r.tags, nativeABI)
		if err != nil {
			panic("mechanisms: " + err.Error())
		}
		layouts[r.t] = l
	}
	// Every pointer/length field must lead to something the marshaller can
	// lay out; check once here rather than on every call.
	for _, l := range layouts {
		for _, f := range l.fields {
			if f.kind != kindRef {
				continue
			}
			ft := l.goType.Field(f.index).Type
			if err := checkRefType(ft); err != nil {
				panic(fmt.Sprintf("mechanisms: %v.%s: %v", l.goType, f.goName, err))
			}
		}
	}
}

func checkRefType(t reflect.Type) error {
	switch t.Kind() {
	case reflect.Interface:
		if t.NumMethod() == 0 {
			return nil // dynamic: checked per value
		}
	case reflect.Slice:
		e := t.Elem()
		if e.Kind() == reflect.Uint8 {
			return nil
		}
		if _, err := elemLayout(e); err == nil {
			return nil
		}
	case reflect.Pointer:
		if layouts[t.Elem()] != nil {
			return nil
		}
	}
	return fmt.Errorf("no C layout for %v", t)
}

// elemLayout returns the layout of the C array element for Go slice
// element type e: a registered struct, a pointer to one, or a union.
func elemLayout(e reflect.Type) (*layout, error) {
	switch e.Kind() {
	case reflect.Interface:
		if u, ok := unions[e]; ok {
			return layouts[u.wire], nil
		}
	case reflect.Pointer:
		if l := layouts[e.Elem()]; l != nil {
			return l, nil
		}
	case reflect.Struct:
		if l := layouts[e]; l != nil {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no C layout for slice element %v", e)
}
