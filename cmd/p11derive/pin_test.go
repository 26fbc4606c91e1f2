//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the master (what a terminal
// emulator reads and writes) and the slave (the program's stdin).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	// Non-blocking, so that reads of the master honour deadlines.
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	m := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { m.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestPINPromptNoEcho: --pin-prompt on a real (pseudo-)terminal reads the
// PIN with echo off: the terminal shows the prompt, never the PIN, and the
// terminal's echo is back on afterwards.
func TestPINPromptNoEcho(t *testing.T) {
	master, slave := openPTY(t)
	const pin = "Pr0mpt-PIN-4711"
	var prompt bytes.Buffer
	type result struct {
		src pinSource
		err error
	}
	done := make(chan result, 1)
	go func() {
		src, err := promptPIN(slave, &prompt)
		done <- result{src, err}
	}()
	// Type the PIN once the prompt has turned echo off.
	deadline := time.Now().Add(5 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		require.NoError(t, err)
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "echo never turned off")
		time.Sleep(5 * time.Millisecond)
	}
	_, err := master.WriteString(pin + "\n")
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	assert.Equal(t, pin, r.src.pin)
	assert.Equal(t, "the terminal", r.src.from)
	assert.Contains(t, prompt.String(), "user PIN: ")
	assert.NotContains(t, prompt.String(), pin)

	// What the terminal displayed: no echo of the PIN.
	require.NoError(t, master.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	shown := make([]byte, 4096)
	n, _ := master.Read(shown)
	assert.NotContains(t, string(shown[:n]), pin)

	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	require.NoError(t, err)
	assert.NotZero(t, tio.Lflag&unix.ECHO, "echo restored")
}
