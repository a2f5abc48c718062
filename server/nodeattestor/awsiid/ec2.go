package awsiid

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxAPIResponse bounds EC2 and IAM responses.
const maxAPIResponse = 1 << 20

// instance is the part of a DescribeInstances item the attestor uses.
type instance struct {
	InstanceID string `xml:"instanceId"`
	Groups     []struct {
		ID   string `xml:"groupId"`
		Name string `xml:"groupName"`
	} `xml:"groupSet>item"`
	RootDeviceType string `xml:"rootDeviceType"`
	RootDeviceName string `xml:"rootDeviceName"`
	BlockDevices   []struct {
		DeviceName string    `xml:"deviceName"`
		AttachTime time.Time `xml:"ebs>attachTime"`
	} `xml:"blockDeviceMapping>item"`
	ProfileARN string `xml:"iamInstanceProfile>arn"`
	Tags       []struct {
		Key   string `xml:"key"`
		Value string `xml:"value"`
	} `xml:"tagSet>item"`
	NICs []struct {
		DeviceIndex *int      `xml:"attachment>deviceIndex"`
		AttachTime  time.Time `xml:"attachment>attachTime"`
	} `xml:"networkInterfaceSet>item"`
}

type describeInstancesResponse struct {
	Reservations []struct {
		Instances []instance `xml:"instancesSet>item"`
	} `xml:"reservationSet>item"`
}

type getInstanceProfileResponse struct {
	Roles []struct {
		Arn string `xml:"Arn"`
	} `xml:"GetInstanceProfileResult>InstanceProfile>Roles>member"`
}

type apiError struct {
	Code    string `xml:"Errors>Error>Code"`
	Message string `xml:"Errors>Error>Message"`
}

// call POSTs a signed query-API request and decodes the XML answer.
func (a *Attestor) call(ctx context.Context, endpoint, region, service string, form url.Values, out any) error {
	body := []byte(form.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	signV4(req, body, a.cfg.Credentials, region, service, a.cfg.Now())
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse+1))
	if err != nil {
		return err
	}
	if len(b) > maxAPIResponse {
		return errors.New("response too large")
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if xml.Unmarshal(b, &e) == nil && e.Code != "" {
			return fmt.Errorf("%s: %s: %s", resp.Status, e.Code, e.Message)
		}
		return fmt.Errorf("%s", resp.Status)
	}
	return xml.Unmarshal(b, out)
}

func (a *Attestor) ec2Endpoint(region string) string {
	if a.cfg.EC2Endpoint != "" {
		return a.cfg.EC2Endpoint
	}
	return "https://ec2." + region + ".amazonaws.com/"
}

func (a *Attestor) describeInstance(ctx context.Context, region, id string) (*instance, error) {
	var out describeInstancesResponse
	form := url.Values{"Action": {"DescribeInstances"}, "Version": {"2016-11-15"}, "InstanceId.1": {id}}
	if err := a.call(ctx, a.ec2Endpoint(region), region, "ec2", form, &out); err != nil {
		return nil, fmt.Errorf("DescribeInstances: %w", err)
	}
	var found []instance
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if i.InstanceID == id {
				found = append(found, i)
			}
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("DescribeInstances: %d instances with ID %q", len(found), id)
	}
	return &found[0], nil
}

func (a *Attestor) instanceProfileRoles(ctx context.Context, profileARN string) ([]string, error) {
	// arn:aws:iam::123456789012:instance-profile/path/name
	_, rest, ok := strings.Cut(profileARN, ":instance-profile/")
	if !ok || rest == "" {
		return nil, fmt.Errorf("malformed instance profile ARN %q", profileARN)
	}
	name := rest[strings.LastIndex(rest, "/")+1:]
	var out getInstanceProfileResponse
	form := url.Values{"Action": {"GetInstanceProfile"}, "Version": {"2010-05-08"}, "InstanceProfileName": {name}}
	if err := a.call(ctx, a.cfg.IAMEndpoint, "us-east-1", "iam", form, &out); err != nil {
		return nil, fmt.Errorf("GetInstanceProfile: %w", err)
	}
	var roles []string
	for _, r := range out.Roles {
		if r.Arn != "" {
			roles = append(roles, r.Arn)
		}
	}
	return roles, nil
}

// maxAttachSkew is how far apart the root volume and the primary network
// interface may have been attached. Both attach at launch; a root volume
// attached later was swapped, possibly for one that carries another
// instance's agent key.
const maxAttachSkew = 60 * time.Second

func checkBlockDevice(i *instance) error {
	var nicTime time.Time
	found := false
	for _, n := range i.NICs {
		if n.DeviceIndex != nil && *n.DeviceIndex == 0 {
			nicTime, found = n.AttachTime, true
			break
		}
	}
	if !found {
		return errors.New("the instance has no network interface with device index 0")
	}
	if i.RootDeviceType == "instance-store" {
		return nil
	}
	for _, b := range i.BlockDevices {
		if b.DeviceName == i.RootDeviceName {
			skew := b.AttachTime.Sub(nicTime).Abs()
			if skew > maxAttachSkew {
				return fmt.Errorf("root volume and network interface 0 were attached %s apart", skew.Round(time.Second))
			}
			return nil
		}
	}
	return fmt.Errorf("no block device mapping for root device %q", i.RootDeviceName)
}
