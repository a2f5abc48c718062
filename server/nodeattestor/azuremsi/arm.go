package azuremsi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// armClient reads a tenant's virtual machines and network interfaces from
// Azure Resource Manager with application (client-credentials) access.
type armClient struct {
	login, arm string
	tenant     string
	sub        string
	appID      string
	appSecret  string
	client     *http.Client
	now        func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

const maxARMResponse = 4 << 20

func (c *armClient) accessToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.now().Before(c.expires) {
		return c.token, nil
	}
	form := url.Values{
		"grant_type": {"client_credentials"}, "client_id": {c.appID}, "client_secret": {c.appSecret},
		"scope": {strings.TrimSuffix(c.armScope(), "/") + "/.default"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.login+"/"+url.PathEscape(c.tenant)+"/oauth2/v2.0/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := c.do(req, &out); err != nil {
		return "", fmt.Errorf("app token: %w", err)
	}
	if out.AccessToken == "" {
		return "", errors.New("app token: no access_token")
	}
	c.token = out.AccessToken
	c.expires = c.now().Add(time.Duration(out.ExpiresIn)*time.Second - time.Minute)
	return c.token, nil
}

// armScope is the resource the app token is for: management.azure.com
// for the real ARM, the endpoint itself for a simulator.
func (c *armClient) armScope() string {
	if c.arm == DefaultARMEndpoint {
		return "https://management.azure.com/"
	}
	return c.arm
}

func (c *armClient) get(ctx context.Context, u string, v any) error {
	tok, err := c.accessToken(ctx)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return c.do(req, v)
}

func (c *armClient) do(req *http.Request, v any) error {
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxARMResponse+1))
	if err != nil {
		return err
	}
	if len(b) > maxARMResponse {
		return errors.New("response too large")
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	return json.Unmarshal(b, v)
}

type armVM struct {
	ID       string `json:"id"`
	Identity *struct {
		PrincipalID string `json:"principalId"`
	} `json:"identity"`
	Properties struct {
		NetworkProfile *struct {
			NetworkInterfaces []struct {
				ID string `json:"id"`
			} `json:"networkInterfaces"`
		} `json:"networkProfile"`
	} `json:"properties"`
}

type armNIC struct {
	Properties struct {
		NetworkSecurityGroup *struct {
			ID string `json:"id"`
		} `json:"networkSecurityGroup"`
		IPConfigurations []struct {
			Properties struct {
				Subnet *struct {
					ID string `json:"id"`
				} `json:"subnet"`
			} `json:"properties"`
		} `json:"ipConfigurations"`
	} `json:"properties"`
}

// vmByPrincipal finds the VM whose system-assigned identity is principal.
func (c *armClient) vmByPrincipal(ctx context.Context, principal string) (*armVM, error) {
	next := c.arm + "/subscriptions/" + url.PathEscape(c.sub) + "/providers/Microsoft.Compute/virtualMachines?api-version=2023-03-01"
	for page := 0; next != "" && page < 100; page++ {
		var out struct {
			Value    []armVM `json:"value"`
			NextLink string  `json:"nextLink"`
		}
		if err := c.get(ctx, next, &out); err != nil {
			return nil, fmt.Errorf("list virtual machines: %w", err)
		}
		for i := range out.Value {
			if id := out.Value[i].Identity; id != nil && strings.EqualFold(id.PrincipalID, principal) {
				return &out.Value[i], nil
			}
		}
		next = out.NextLink
	}
	return nil, fmt.Errorf("no virtual machine in subscription %s has principal %s", c.sub, principal)
}

func (c *armClient) nic(ctx context.Context, id string) (*armNIC, error) {
	var n armNIC
	if err := c.get(ctx, c.arm+id+"?api-version=2023-05-01", &n); err != nil {
		return nil, fmt.Errorf("get network interface: %w", err)
	}
	return &n, nil
}

// resourceID splits an ARM ID into its resource group and the names after
// the provider namespace: ".../resourceGroups/rg/providers/NS/type/name
// [/subtype/subname]" gives rg and [name, subname].
func resourceID(id string) (group string, names []string, err error) {
	parts := strings.Split(strings.Trim(id, "/"), "/")
	for i := 0; i+1 < len(parts); i++ {
		if strings.EqualFold(parts[i], "resourceGroups") {
			group = parts[i+1]
		}
		if strings.EqualFold(parts[i], "providers") && i+2 < len(parts) {
			rest := parts[i+2:]
			if len(rest)%2 != 0 || group == "" {
				break
			}
			for j := 1; j < len(rest); j += 2 {
				names = append(names, rest[j])
			}
			return group, names, nil
		}
	}
	return "", nil, fmt.Errorf("malformed resource ID %q", id)
}
