package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
)

// interrupted is set when the process got SIGINT; the exit status is then
// 130 (exitInterrupted).
var interrupted atomic.Bool

// errInterrupted is a command's error when it stopped for SIGINT.
var errInterrupted = errors.New("p11derive: interrupted")

// rootCtx is the context commands run under; main cancels it on SIGINT.
var rootCtx = context.Background()

// onInterrupt, when set, undoes what must not outlive the process (the
// terminal's echo turned off by --pin-prompt) before an immediate exit.
var (
	onInterruptMu sync.Mutex
	onInterrupt   func()
)

func setOnInterrupt(f func()) {
	onInterruptMu.Lock()
	onInterrupt = f
	onInterruptMu.Unlock()
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	rootCtx = ctx
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt)
	go func() {
		<-sig
		interrupted.Store(true)
		onInterruptMu.Lock()
		f := onInterrupt
		onInterruptMu.Unlock()
		if f != nil { // at the PIN prompt: nothing to finish
			f()
			fmt.Fprintln(os.Stderr, "p11derive: interrupted")
			os.Exit(exitInterrupted)
		}
		// The command stops at its next check of rootCtx (batch finishes
		// the rows in flight); a second SIGINT exits at once.
		cancel()
		<-sig
		fmt.Fprintln(os.Stderr, "p11derive: interrupted again: exiting at once")
		os.Exit(exitInterrupted)
	}()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
