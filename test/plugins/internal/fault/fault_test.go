package fault

import (
	"testing"

	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		hcl     string
		want    Faults
		wantErr bool
	}{
		{name: "empty", hcl: ""},
		{name: "other keys only", hcl: `label = "x"` + "\n" + `secret = "s"`},
		{name: "hang", hcl: `hang = true`, want: Faults{Hang: true}},
		{name: "crash and exit", hcl: "crash = true\nexit_in_configure = true", want: Faults{Crash: true, ExitInConfigure: true}},
		{name: "fail", hcl: `fail_configure = true`, want: Faults{FailConfigure: true}},
		{name: "bad hcl", hcl: `hang = "unterminated`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.hcl)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Parse(%q) error = %v, want error %v", tt.hcl, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.hcl, got, tt.want)
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	type pluginConfig struct {
		Label string `hcl:"label"`
	}
	tests := []struct {
		name     string
		hcl      string
		wantCode codes.Code
		wantMsg  string
		want     Faults
		label    string
	}{
		{name: "plain", hcl: `label = "a"`, label: "a"},
		{name: "hang kept", hcl: "label = \"b\"\nhang = true", label: "b", want: Faults{Hang: true}},
		{name: "fail", hcl: `fail_configure = true`, wantCode: codes.InvalidArgument, wantMsg: "fail_configure is set"},
		{name: "bad hcl", hcl: `label = "unterminated`, wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg pluginConfig
			got, err := Configure(&configv1.ConfigureRequest{HclConfiguration: tt.hcl}, &cfg)
			if status.Code(err) != tt.wantCode {
				t.Fatalf("Configure error = %v, want code %v", err, tt.wantCode)
			}
			if tt.wantMsg != "" && status.Convert(err).Message() != tt.wantMsg {
				t.Fatalf("Configure message = %q, want %q", status.Convert(err).Message(), tt.wantMsg)
			}
			if err != nil {
				return
			}
			if got != tt.want || cfg.Label != tt.label {
				t.Fatalf("Configure = %+v label %q, want %+v label %q", got, cfg.Label, tt.want, tt.label)
			}
		})
	}
}
