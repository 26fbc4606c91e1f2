package mechanisms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"unsafe"
)

// encoder walks a Go value along its layout. It runs twice over the same
// value: a sizing pass (dry) that validates everything and computes the size
// of the out-of-line data, then, after the single C allocation, a writing
// pass that fills in the structure bytes and the C block. Both passes make
// the same allocations in the same order, so offsets agree.
type encoder struct {
	mechanism uint
	dry       bool
	block     []byte  // the C block (nil in the sizing pass)
	base      uintptr // address of block[0]
	used      uintptr // bytes of the block handed out so far
	outs      []output
}

// output is a Go field to be set from a CK_ULONG in the block after the call.
type output struct {
	v   reflect.Value
	off uintptr
}

// alloc reserves size bytes aligned to align in the block.
func (e *encoder) alloc(size, align uintptr) uintptr {
	off := alignUp(e.used, align)
	e.used = off + size
	return off
}

// sub returns the block bytes [off, off+size), or nil in the sizing pass.
func (e *encoder) sub(off, size uintptr) []byte {
	if e.dry {
		return nil
	}
	return e.block[off : off+size : off+size]
}

var maxULong = uint64(math.MaxUint64) >> (64 - 8*nativeABI.ulongSize)

func putULong(dst []byte, off uintptr, v uint64) {
	if dst == nil {
		return
	}
	if nativeABI.ulongSize == 8 {
		binary.NativeEndian.PutUint64(dst[off:], v)
	} else {
		binary.NativeEndian.PutUint32(dst[off:], uint32(v))
	}
}

func getULong(src []byte, off uintptr) uint64 {
	if nativeABI.ulongSize == 8 {
		return binary.NativeEndian.Uint64(src[off:])
	}
	return uint64(binary.NativeEndian.Uint32(src[off:]))
}

func putPtr(dst []byte, off uintptr, p uintptr) {
	if dst == nil {
		return
	}
	if nativeABI.ptrSize == 8 {
		binary.NativeEndian.PutUint64(dst[off:], uint64(p))
	} else {
		binary.NativeEndian.PutUint32(dst[off:], uint32(p))
	}
}

// encodeStruct writes v, laid out as l, into dst (nil in the sizing pass).
func (e *encoder) encodeStruct(dst []byte, v reflect.Value, l *layout) error {
	if e.dry && l.check {
		if err := v.Interface().(validator).validate(e.mechanism); err != nil {
			return err
		}
	}
	for i := range l.fields {
		f := &l.fields[i]
		fv := v
		if f.index >= 0 {
			fv = v.Field(f.index)
		}
		switch f.kind {
		case kindULong:
			u := fv.Uint()
			if u > maxULong {
				return at(f.goName, fmt.Errorf("%d does not fit in a %d-byte CK_ULONG", u, nativeABI.ulongSize))
			}
			putULong(dst, f.c.offset, u)
		case kindBBool:
			if dst != nil && fv.Bool() {
				dst[f.c.offset] = 1 // CK_TRUE; the buffer is zeroed, so CK_FALSE needs no write
			}
		case kindBytes:
			if dst != nil {
				for j := 0; j < fv.Len(); j++ {
					dst[f.c.offset+uintptr(j)] = byte(fv.Index(j).Uint())
				}
			}
		case kindRef:
			p, n, err := e.encodeRef(fv)
			if err != nil {
				return at(f.goName, err)
			}
			putPtr(dst, f.c.offset, p)
			putULong(dst, f.length.offset, n)
		case kindOut:
			if e.dry && !fv.CanSet() {
				return at(f.goName, errors.New("output field is not settable"))
			}
			off := e.alloc(nativeABI.ulongSize, nativeABI.ulongAlign)
			if !e.dry {
				e.outs = append(e.outs, output{v: fv, off: off})
			}
			putPtr(dst, f.c.offset, e.base+off)
		}
	}
	return nil
}

// encodeRef places the data of a pointer/length field in the block and
// returns the pointer and length member values.
func (e *encoder) encodeRef(fv reflect.Value) (uintptr, uint64, error) {
	switch fv.Kind() {
	case reflect.Interface:
		if fv.IsNil() {
			return 0, 0, nil
		}
		return e.encodeRef(fv.Elem())
	case reflect.Pointer:
		if fv.IsNil() {
			return 0, 0, nil
		}
		return e.encodeOne(fv.Elem())
	case reflect.Struct:
		return e.encodeOne(fv)
	case reflect.Slice:
		n := fv.Len()
		if n == 0 {
			return 0, 0, nil
		}
		et := fv.Type().Elem()
		if et.Kind() == reflect.Uint8 {
			off := e.alloc(uintptr(n), 1)
			if !e.dry {
				copy(e.sub(off, uintptr(n)), fv.Bytes())
			}
			return e.base + off, uint64(n), nil
		}
		el, err := elemLayout(et)
		if err != nil {
			return 0, 0, err
		}
		off := e.alloc(uintptr(n)*el.size, el.align)
		for i := 0; i < n; i++ {
			ev, err := element(fv.Index(i))
			if err == nil {
				err = e.encodeStruct(e.sub(off+uintptr(i)*el.size, el.size), ev, el)
			}
			if err != nil {
				return 0, 0, at(fmt.Sprintf("[%d]", i), err)
			}
		}
		return e.base + off, uint64(n), nil
	}
	return 0, 0, fmt.Errorf("cannot marshal %v", fv.Type())
}

// encodeOne places one registered structure in the block; the length member
// becomes its C size.
func (e *encoder) encodeOne(v reflect.Value) (uintptr, uint64, error) {
	l := layouts[v.Type()]
	if l == nil {
		return 0, 0, fmt.Errorf("cannot marshal %v", v.Type())
	}
	off := e.alloc(l.size, l.align)
	if err := e.encodeStruct(e.sub(off, l.size), v, l); err != nil {
		return 0, 0, err
	}
	return e.base + off, uint64(l.size), nil
}

// element returns the structure value to marshal for one slice element:
// the element itself, the structure it points to, or the C form of a union.
func element(ev reflect.Value) (reflect.Value, error) {
	switch ev.Kind() {
	case reflect.Interface:
		if ev.IsNil() {
			return reflect.Value{}, fmt.Errorf("nil %v", ev.Type())
		}
		if d := ev.Elem(); d.Kind() == reflect.Pointer && d.IsNil() {
			return reflect.Value{}, fmt.Errorf("nil %v", d.Type())
		}
		return unions[ev.Type()].conv(ev)
	case reflect.Pointer:
		if ev.IsNil() {
			return reflect.Value{}, fmt.Errorf("nil %v", ev.Type())
		}
		return ev.Elem(), nil
	}
	return ev, nil
}

// pathError locates an error inside the parameter value, e.g.
// "AdditionalDerivedKeys[0].Template[1]".
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// at prefixes err's path with prefix (a field name or "[i]").
func at(prefix string, err error) error {
	if pe, ok := err.(*pathError); ok {
		if pe.path[0] == '[' {
			return &pathError{prefix + pe.path, pe.err}
		}
		return &pathError{prefix + "." + pe.path, pe.err}
	}
	return &pathError{prefix, err}
}

// marshalled is one parameter structure laid out for one call.
type marshalled struct {
	param []byte         // the structure itself, for pkcs11.NewMechanism
	block unsafe.Pointer // the C block holding everything it points to
	size  uintptr        // size of the block
	outs  []output
}

// marshal lays out p for use with mechanism. On success the caller must call
// free exactly once.
func marshal(mechanism uint, p Params) (m marshalled, err error) {
	v := reflect.ValueOf(p)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return m, fmt.Errorf("mechanisms: nil %v", v.Type())
		}
		v = v.Elem()
	}
	l := layouts[v.Type()]
	if l == nil {
		return m, fmt.Errorf("mechanisms: no C layout for %v", v.Type())
	}
	if err := checkMechanism(mechanism, v.Type()); err != nil {
		return m, err
	}
	sizing := encoder{mechanism: mechanism, dry: true}
	if err := sizing.encodeStruct(nil, v, l); err != nil {
		return m, fmt.Errorf("mechanisms: %w", at(v.Type().Name(), err))
	}

	m.param = make([]byte, l.size)
	w := encoder{mechanism: mechanism}
	if sizing.used > 0 {
		m.block = cAlloc(sizing.used)
		if m.block == nil {
			return m, fmt.Errorf("mechanisms: cannot allocate %d bytes of C memory", sizing.used)
		}
		w.block = unsafe.Slice((*byte)(m.block), sizing.used)
		w.base = uintptr(m.block)
		m.size = sizing.used
	}
	ok := false
	defer func() {
		if !ok {
			m.free() // the writing pass failed or panicked (p changed under us)
		}
	}()
	if err := w.encodeStruct(m.param, v, l); err != nil {
		return m, fmt.Errorf("mechanisms: %w", at(v.Type().Name(), err))
	}
	if w.used != sizing.used {
		return m, errors.New("mechanisms: parameter changed while it was being marshalled")
	}
	m.outs = w.outs
	ok = true
	return m, nil
}

// copyBack sets the output fields from the block.
func (m *marshalled) copyBack() {
	if len(m.outs) == 0 {
		return
	}
	b := unsafe.Slice((*byte)(m.block), m.outs[len(m.outs)-1].off+nativeABI.ulongSize)
	for _, o := range m.outs {
		o.v.SetUint(getULong(b, o.off))
	}
}

func (m *marshalled) free() {
	if m.block != nil {
		cFree(m.block)
		m.block = nil
	}
	m.outs = nil
}
