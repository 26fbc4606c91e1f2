package derive_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/probe"
)

// TestProbeThroughP11Kit runs the probe through p11-kit's proxy and RPC
// (in this directory rather than probe's: its cleanup finalises the RPC
// client's function list, which only package derive can reach). Through
// the proxy the probe verifies what the token does directly; through the
// RPC it reports aes-ecb as not running (the RPC drops
// CKM_AES_ECB_ENCRYPT_DATA and the MACs) and verifies aes-ecb-decrypt on
// NSS softoken by its known answer. Either way it leaves nothing behind.
func TestProbeThroughP11Kit(t *testing.T) {
	for _, c := range []struct {
		name string
		rig  func(t *testing.T) *lab.Token
	}{
		{"proxy/softhsm2", func(t *testing.T) *lab.Token { return lab.Proxy(t, lab.SoftHSM2(t)) }},
		{"proxy/nss", func(t *testing.T) *lab.Token { return lab.Proxy(t, lab.NSS(t)) }},
		{"rpc/softhsm2", func(t *testing.T) *lab.Token { return lab.RPC(t, lab.SoftHSM2(t)) }},
		{"rpc/nss", func(t *testing.T) *lab.Token { return lab.RPC(t, lab.NSS(t)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			rig := c.rig(t)
			rig.Setenv(t)
			cfg := derive.Config{Module: rig.Module, InitArgs: rig.InitArgs, Slot: &rig.SlotID, ReadOnly: true}
			if rig.Login {
				cfg.PIN = rig.PIN
			}
			tok, err := derive.Open(cfg)
			require.NoError(t, err)
			t.Cleanup(func() {
				require.NoError(t, tok.Close())
				require.NoError(t, derive.FinalizeModule(rig.Module))
			})
			ctx := context.Background()
			before, err := tok.Labels(ctx)
			require.NoError(t, err)
			rep, err := probe.Run(ctx, tok, probe.Options{Runs: 1, Functions: []string{"aes-ecb", "aes-ecb-decrypt"}})
			require.NoError(t, err)
			after, err := tok.Labels(ctx)
			require.NoError(t, err)
			assert.Equal(t, len(before), len(after), "objects left behind")

			status := map[string]probe.Status{}
			for _, r := range rep.Results {
				status[r.KDF+"/"+r.Strategy] = r.Status
				t.Logf("%s/%s: %s %s %s", r.KDF, r.Strategy, r.Status, r.CKR, r.Reason)
			}
			proxied := c.name[:5] == "proxy"
			// The proxy answers C_GetInfo itself; the RPC client passes on
			// the module's own CK_INFO.
			if proxied {
				assert.Equal(t, "PKCS#11 Kit", rep.Token.Module.Manufacturer)
			} else {
				assert.NotContains(t, rep.Token.Module.Manufacturer, "PKCS#11 Kit")
			}
			if proxied {
				assert.Equal(t, probe.Verified, status["aes-ecb/native"], "the proxy passes CKM_AES_ECB_ENCRYPT_DATA on")
			} else {
				for _, st := range []string{"native", "mac-unwrap", "cmac-unwrap"} {
					assert.NotEqual(t, probe.Verified, status["aes-ecb/"+st], st)
					assert.NotEqual(t, probe.Ran, status["aes-ecb/"+st], st)
				}
			}
			if c.name[len(c.name)-3:] == "nss" {
				assert.Equal(t, probe.Verified, status["aes-ecb-decrypt/unwrap"])
				if proxied {
					assert.Equal(t, probe.Verified, status["aes-ecb/mac-unwrap"])
				}
			} else {
				assert.NotEqual(t, probe.Verified, status["aes-ecb-decrypt/unwrap"], "SoftHSM2 does not unwrap with ECB")
			}
		})
	}
}
