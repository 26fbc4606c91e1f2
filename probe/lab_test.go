package probe

import (
	"context"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// The examples (example_test.go) read their token, made by MainExamples,
// from the environment.
func TestMain(m *testing.M) { os.Exit(lab.MainExamples(m, lab.InitNow)) }

// labToken is a lab token opened with derive.Open (labtok), and a session
// of its own (lab.Open) for counting objects.
type labToken struct {
	*labtok.Token
	ctx  *pkcs11.Ctx
	sess pkcs11.SessionHandle
}

// openLab opens l's session, then l through derive (closed when the test
// ends).
func openLab(t *testing.T, l *lab.Token) *labToken {
	t.Helper()
	ctx, sess := lab.Open(t, l)
	return &labToken{Token: labtok.Open(t, l.Kind, l), ctx: ctx, sess: sess}
}

// softhsm2 is a fresh SoftHSM2 token.
func softhsm2(t *testing.T, opts ...lab.Option) *labToken {
	t.Helper()
	l := lab.SoftHSM2(t, opts...)
	l.Setenv(t)
	return openLab(t, l)
}

// nss is NSS softoken's crypto slot (session objects, no login).
func nss(t *testing.T) *labToken {
	t.Helper()
	return openLab(t, lab.NSS(t))
}

// nssFwd is NSS softoken's crypto slot behind the forwarding module.
func nssFwd(t *testing.T, cfg fwd.Config) *labToken {
	t.Helper()
	lab.Open(t, lab.NSS(t)) // the real module initialised first
	return openLab(t, fwd.Wrap(t, lab.NSS(t), cfg))
}

func (lt *labToken) objects(t *testing.T) int {
	t.Helper()
	return lab.CountObjects(t, lt.ctx, lt.sess)
}

func (lt *labToken) run(t *testing.T, opts Options) *Report {
	t.Helper()
	before := lt.objects(t)
	rep, err := Run(context.Background(), lt.Tok, opts)
	require.NoError(t, err)
	require.Equal(t, before, lt.objects(t), "objects left behind")
	return rep
}
