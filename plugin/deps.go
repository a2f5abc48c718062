package plugin

import (
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/go-plugin"
	_ "github.com/spiffe/spire-plugin-sdk/pluginmain"
	_ "github.com/spiffe/spire-plugin-sdk/private"
)
