package batch

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Progress reports a run on a writer (stderr): on a terminal, a bar redrawn
// in place with the rate and the time left; elsewhere, a quiet line every
// Every. Failed rows are printed as lines in both cases, above the bar.
// Its methods fit Config.OnTick and Config.OnFailure.
type Progress struct {
	W      io.Writer
	Prefix string        // starts every line, e.g. "p11derive batch"
	Bar    bool          // W is a terminal: draw a bar
	Width  func() int    // the terminal's width, for the bar; nil means 80
	Every  time.Duration // without a bar, a line this often; 0: no lines

	mu    sync.Mutex
	drawn bool      // a bar is on the screen
	last  time.Time // of the last line
}

// Failure prints a failed row.
func (p *Progress) Failure(e *RowError) { p.Printf("%v", e) }

// Printf prints a line, above the bar if there is one.
func (p *Progress) Printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
	fmt.Fprintf(p.W, "%s: %s\n", p.Prefix, fmt.Sprintf(format, args...))
}

// Tick shows the counts.
func (p *Progress) Tick(s Stats) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Bar {
		width := 80
		if p.Width != nil {
			if w := p.Width(); w > 20 {
				width = w
			}
		}
		fmt.Fprintf(p.W, "\r%s\x1b[K", BarLine(s, width-1))
		p.drawn = true
		return
	}
	if p.Every <= 0 {
		return
	}
	now := time.Now()
	if p.last.IsZero() {
		p.last = now // the first line after Every, not at once
		return
	}
	if now.Sub(p.last) < p.Every {
		return
	}
	p.last = now
	fmt.Fprintf(p.W, "%s: %s\n", p.Prefix, Line(s))
}

// Clear removes the bar, before the summary.
func (p *Progress) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clear()
}

func (p *Progress) clear() {
	if p.drawn {
		fmt.Fprint(p.W, "\r\x1b[K")
		p.drawn = false
	}
}

// BarLine is the bar of a terminal of the given width:
//
//	45% [=========>           ] 450,112/1,000,000  9,812/s  ETA 0:56  2 failed
func BarLine(s Stats, width int) string {
	var tail strings.Builder
	done := s.Read
	if s.Total > 0 {
		fmt.Fprintf(&tail, " %s/%s", thousands(done), thousands(s.Total))
	} else {
		fmt.Fprintf(&tail, " %s rows", thousands(done))
	}
	fmt.Fprintf(&tail, "  %s/s", thousands(int(s.Rate()+0.5)))
	if eta, ok := s.ETA(); ok {
		fmt.Fprintf(&tail, "  ETA %s", clock(eta))
	}
	if s.Failed > 0 {
		fmt.Fprintf(&tail, "  %s failed", thousands(s.Failed))
	}
	if s.Total <= 0 {
		return truncate(strings.TrimPrefix(tail.String(), " "), width)
	}
	frac := min(float64(done)/float64(s.Total), 1)
	head := fmt.Sprintf("%3.0f%% ", frac*100)
	barWidth := width - len(head) - len(tail.String()) - 2
	if barWidth < 10 {
		return truncate(head+strings.TrimPrefix(tail.String(), " "), width)
	}
	fill := int(frac * float64(barWidth))
	bar := strings.Repeat("=", fill)
	if fill < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-fill-1)
	}
	return head + "[" + bar + "]" + tail.String()
}

// Line is the progress line written when stderr is not a terminal.
func Line(s Stats) string {
	var b strings.Builder
	if s.Total > 0 {
		fmt.Fprintf(&b, "%d/%d rows (%.0f%%)", s.Read, s.Total, 100*min(float64(s.Read)/float64(s.Total), 1))
	} else {
		fmt.Fprintf(&b, "%d rows", s.Read)
	}
	fmt.Fprintf(&b, ", %d written, %d failed, %.0f/s", s.Written, s.Failed, s.Rate())
	if eta, ok := s.ETA(); ok {
		fmt.Fprintf(&b, ", ETA %s", clock(eta))
	}
	return b.String()
}

// ETA is the time the rows left should take at the current rate.
func (s Stats) ETA() (time.Duration, bool) {
	rate := s.Rate()
	if s.Total <= 0 || rate <= 0 || s.Read >= s.Total {
		return 0, false
	}
	return time.Duration(float64(s.Total-s.Read) / rate * float64(time.Second)), true
}

func clock(d time.Duration) string {
	sec := int(d.Round(time.Second) / time.Second)
	if sec >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", sec/3600, sec/60%60, sec%60)
	}
	return fmt.Sprintf("%d:%02d", sec/60, sec%60)
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func truncate(s string, width int) string {
	if len(s) > width {
		return s[:width]
	}
	return s
}
