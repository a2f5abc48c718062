package cloud

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitorus/pkcs7"
)

// AWSDocument is an EC2 instance identity document, with the JSON names
// IMDS uses.
type AWSDocument struct {
	AccountID        string    `json:"accountId"`
	Architecture     string    `json:"architecture"`
	AvailabilityZone string    `json:"availabilityZone"`
	ImageID          string    `json:"imageId"`
	InstanceID       string    `json:"instanceId"`
	InstanceType     string    `json:"instanceType"`
	PendingTime      time.Time `json:"pendingTime"`
	PrivateIP        string    `json:"privateIp"`
	Region           string    `json:"region"`
	Version          string    `json:"version"`
}

// AWSSecurityGroup is one security group of an instance.
type AWSSecurityGroup struct{ ID, Name string }

// AWSInstance describes the simulated EC2 instance: its identity document
// and what DescribeInstances and GetInstanceProfile report about it.
type AWSInstance struct {
	Document       AWSDocument
	Tags           map[string]string
	SecurityGroups []AWSSecurityGroup
	// InstanceProfileARN and RoleARNs describe the IAM instance profile;
	// empty means none.
	InstanceProfileARN string
	RoleARNs           []string
	// RootDeviceType is "ebs" (default) or "instance-store".
	RootDeviceType string
	// RootAttachTime and NICAttachTime are when the root volume and the
	// primary network interface were attached; zero means PendingTime. A
	// root volume attached long after boot is what the block-device check
	// catches.
	RootAttachTime, NICAttachTime time.Time
}

// DefaultAWSInstance is a plausible instance in us-east-1.
func DefaultAWSInstance() AWSInstance {
	return AWSInstance{
		Document: AWSDocument{
			AccountID: "123456789012", Architecture: "x86_64", AvailabilityZone: "us-east-1a",
			ImageID: "ami-5fb8c835", InstanceID: "i-0b22a22eec53b9321", InstanceType: "t3.micro",
			PendingTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), PrivateIP: "10.0.0.12",
			Region: "us-east-1", Version: "2017-09-30",
		},
		Tags:               map[string]string{"Name": "blog", "env": "prod"},
		SecurityGroups:     []AWSSecurityGroup{{ID: "sg-01234567", Name: "blog"}},
		InstanceProfileARN: "arn:aws:iam::123456789012:instance-profile/blog",
		RoleARNs:           []string{"arn:aws:iam::123456789012:role/Blog"},
	}
}

// AWSSigner signs instance identity documents the way AWS does: a PKCS#7
// SignedData holding the document, signed with a region's RSA-2048 key
// whose self-signed certificate the server is configured with.
type AWSSigner struct {
	Region string
	key    *rsa.PrivateKey
	cert   *x509.Certificate
}

// NewAWSSigner makes a fresh test key and certificate for region.
func NewAWSSigner(region string) (*AWSSigner, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("cloud: aws: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, fmt.Errorf("cloud: aws: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Simulated Amazon Web Services LLC"}, Locality: []string{region}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("cloud: aws: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("cloud: aws: parse certificate: %w", err)
	}
	return &AWSSigner{Region: region, key: key, cert: cert}, nil
}

// CertPEM is the region certificate to configure on the server.
func (s *AWSSigner) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cert.Raw})
}

// Sign returns the base64 PKCS#7 signature of doc without PEM armour, as
// IMDS serves it at dynamic/instance-identity/rsa2048.
func (s *AWSSigner) Sign(doc []byte) (string, error) {
	sd, err := pkcs7.NewSignedData(doc)
	if err != nil {
		return "", fmt.Errorf("cloud: aws: pkcs7: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(s.cert, s.key, pkcs7.SignerInfoConfig{}); err != nil {
		return "", fmt.Errorf("cloud: aws: pkcs7 sign: %w", err)
	}
	der, err := sd.Finish()
	if err != nil {
		return "", fmt.Errorf("cloud: aws: pkcs7 finish: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// AWSConfig configures StartAWS.
type AWSConfig struct {
	// Instance defaults to DefaultAWSInstance().
	Instance *AWSInstance
	// Signer defaults to a new signer for the instance's region.
	Signer *AWSSigner
	// AccessKeyID is the key the EC2 and IAM APIs accept (default
	// "AKIDSIMULATED"); requests must carry a SigV4 Authorization header
	// naming it.
	AccessKeyID string
	// AllowIMDSv1 lets metadata be read without a session token.
	AllowIMDSv1 bool
}

// AWS is a running AWS simulator.
type AWS struct {
	srv         *server
	signer      *AWSSigner
	inst        AWSInstance
	accessKeyID string
	allowV1     bool
	doc         []byte
	sig         string

	mu          sync.Mutex
	tokens      map[string]time.Time
	tokenPuts   atomic.Int64
	apiRequests atomic.Int64
}

// StartAWS starts IMDS (under /latest), the EC2 query API (under /ec2/)
// and the IAM query API (under /iam/) on one loopback listener.
func StartAWS(cfg AWSConfig) (*AWS, error) {
	inst := DefaultAWSInstance()
	if cfg.Instance != nil {
		inst = *cfg.Instance
	}
	signer := cfg.Signer
	if signer == nil {
		var err error
		if signer, err = NewAWSSigner(inst.Document.Region); err != nil {
			return nil, err
		}
	}
	doc, err := json.MarshalIndent(inst.Document, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cloud: aws: document: %w", err)
	}
	sig, err := signer.Sign(doc)
	if err != nil {
		return nil, err
	}
	a := &AWS{signer: signer, inst: inst, accessKeyID: cfg.AccessKeyID, allowV1: cfg.AllowIMDSv1,
		doc: doc, sig: sig, tokens: map[string]time.Time{}}
	if a.accessKeyID == "" {
		a.accessKeyID = "AKIDSIMULATED"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", a.putToken)
	mux.HandleFunc("GET /latest/dynamic/instance-identity/document", a.imds(func() string { return string(a.doc) }))
	mux.HandleFunc("GET /latest/dynamic/instance-identity/rsa2048", a.imds(func() string { return a.sig }))
	mux.HandleFunc("POST /ec2/", a.api("DescribeInstances", a.describeInstances))
	mux.HandleFunc("POST /iam/", a.api("GetInstanceProfile", a.getInstanceProfile))
	if a.srv, err = startServer("aws", mux); err != nil {
		return nil, err
	}
	return a, nil
}

// Close stops the simulator.
func (a *AWS) Close() error { return a.srv.close() }

// IMDSEndpoint is the agent's ec2_metadata_endpoint.
func (a *AWS) IMDSEndpoint() string { return a.srv.url + "/latest" }

// EC2Endpoint is the server's ec2_endpoint.
func (a *AWS) EC2Endpoint() string { return a.srv.url + "/ec2/" }

// IAMEndpoint is the server's iam_endpoint.
func (a *AWS) IAMEndpoint() string { return a.srv.url + "/iam/" }

// AccessKeyID is the access key the APIs accept; any secret is accepted.
func (a *AWS) AccessKeyID() string { return a.accessKeyID }

// Signer is the region signer whose certificate the server must trust.
func (a *AWS) Signer() *AWSSigner { return a.signer }

// Instance is the simulated instance.
func (a *AWS) Instance() AWSInstance { return a.inst }

// Document returns the identity document exactly as IMDS serves it.
func (a *AWS) Document() []byte { return append([]byte(nil), a.doc...) }

// TokenRequests counts IMDSv2 session tokens issued.
func (a *AWS) TokenRequests() int64 { return a.tokenPuts.Load() }

// APIRequests counts authenticated EC2 and IAM API calls.
func (a *AWS) APIRequests() int64 { return a.apiRequests.Load() }

func (a *AWS) putToken(w http.ResponseWriter, r *http.Request) {
	ttl := r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds")
	d, err := time.ParseDuration(ttl + "s")
	if ttl == "" || err != nil || d <= 0 || d > 6*time.Hour {
		http.Error(w, "missing or invalid X-aws-ec2-metadata-token-ttl-seconds", http.StatusBadRequest)
		return
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	a.mu.Lock()
	a.tokens[tok] = time.Now().Add(d)
	a.mu.Unlock()
	a.tokenPuts.Add(1)
	w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", ttl)
	_, _ = w.Write([]byte(tok))
}

func (a *AWS) imds(body func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("X-aws-ec2-metadata-token")
		if tok == "" && !a.allowV1 {
			http.Error(w, "IMDSv2 session token required", http.StatusUnauthorized)
			return
		}
		if tok != "" {
			a.mu.Lock()
			exp, ok := a.tokens[tok]
			a.mu.Unlock()
			if !ok || time.Now().After(exp) {
				http.Error(w, "invalid session token", http.StatusUnauthorized)
				return
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body()))
	}
}

// awsError is the error body of the AWS query APIs.
type awsError struct {
	XMLName   xml.Name `xml:"Response"`
	Code      string   `xml:"Errors>Error>Code"`
	Message   string   `xml:"Errors>Error>Message"`
	RequestID string   `xml:"RequestID"`
}

func writeAWSError(w http.ResponseWriter, code int, awsCode, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(code)
	_ = xml.NewEncoder(w).Encode(awsError{Code: awsCode, Message: msg, RequestID: "sim"})
}

// api checks the SigV4 credential scope (the simulator does not know the
// secret, so it cannot check the signature itself) and the action, then
// serves it.
func (a *AWS) api(action string, serve func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+a.accessKeyID+"/") || !strings.Contains(auth, "Signature=") || r.Header.Get("X-Amz-Date") == "" {
			writeAWSError(w, http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			writeAWSError(w, http.StatusBadRequest, "InvalidParameterValue", err.Error())
			return
		}
		if got := r.PostForm.Get("Action"); got != action {
			writeAWSError(w, http.StatusBadRequest, "InvalidAction", "unsupported action "+got)
			return
		}
		a.apiRequests.Add(1)
		serve(w, r)
	}
}

type ec2Item struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type ec2Group struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type ec2BlockDevice struct {
	DeviceName string    `xml:"deviceName"`
	AttachTime time.Time `xml:"ebs>attachTime"`
	Status     string    `xml:"ebs>status"`
}

type ec2NIC struct {
	DeviceIndex int       `xml:"attachment>deviceIndex"`
	AttachTime  time.Time `xml:"attachment>attachTime"`
}

type ec2Instance struct {
	InstanceID     string           `xml:"instanceId"`
	ImageID        string           `xml:"imageId"`
	Groups         []ec2Group       `xml:"groupSet>item"`
	RootDeviceType string           `xml:"rootDeviceType"`
	RootDeviceName string           `xml:"rootDeviceName"`
	BlockDevices   []ec2BlockDevice `xml:"blockDeviceMapping>item"`
	ProfileARN     string           `xml:"iamInstanceProfile>arn,omitempty"`
	Tags           []ec2Item        `xml:"tagSet>item"`
	NICs           []ec2NIC         `xml:"networkInterfaceSet>item"`
}

type describeInstancesResponse struct {
	XMLName      xml.Name      `xml:"http://ec2.amazonaws.com/doc/2016-11-15/ DescribeInstancesResponse"`
	RequestID    string        `xml:"requestId"`
	Reservations []reservation `xml:"reservationSet>item"`
}

type reservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []ec2Instance `xml:"instancesSet>item"`
}

func (a *AWS) describeInstances(w http.ResponseWriter, r *http.Request) {
	resp := describeInstancesResponse{RequestID: "sim"}
	if r.PostForm.Get("InstanceId.1") == a.inst.Document.InstanceID {
		inst := a.inst
		root, nic := inst.RootAttachTime, inst.NICAttachTime
		if root.IsZero() {
			root = inst.Document.PendingTime
		}
		if nic.IsZero() {
			nic = inst.Document.PendingTime
		}
		rootType := inst.RootDeviceType
		if rootType == "" {
			rootType = "ebs"
		}
		e := ec2Instance{
			InstanceID: inst.Document.InstanceID, ImageID: inst.Document.ImageID,
			RootDeviceType: rootType, RootDeviceName: "/dev/xvda",
			BlockDevices: []ec2BlockDevice{{DeviceName: "/dev/xvda", AttachTime: root, Status: "attached"}},
			ProfileARN:   inst.InstanceProfileARN,
			NICs:         []ec2NIC{{DeviceIndex: 0, AttachTime: nic}},
		}
		for _, g := range inst.SecurityGroups {
			e.Groups = append(e.Groups, ec2Group{GroupID: g.ID, GroupName: g.Name})
		}
		for k, v := range inst.Tags {
			e.Tags = append(e.Tags, ec2Item{Key: k, Value: v})
		}
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		resp.Reservations = []reservation{{ReservationID: "r-" + hex.EncodeToString(id), OwnerID: inst.Document.AccountID, Instances: []ec2Instance{e}}}
	}
	w.Header().Set("Content-Type", "text/xml")
	_ = xml.NewEncoder(w).Encode(resp)
}

type iamRole struct {
	RoleName string `xml:"RoleName"`
	Arn      string `xml:"Arn"`
}

type getInstanceProfileResponse struct {
	XMLName xml.Name  `xml:"https://iam.amazonaws.com/doc/2010-05-08/ GetInstanceProfileResponse"`
	Name    string    `xml:"GetInstanceProfileResult>InstanceProfile>InstanceProfileName"`
	Arn     string    `xml:"GetInstanceProfileResult>InstanceProfile>Arn"`
	Roles   []iamRole `xml:"GetInstanceProfileResult>InstanceProfile>Roles>member"`
}

func (a *AWS) getInstanceProfile(w http.ResponseWriter, r *http.Request) {
	name := r.PostForm.Get("InstanceProfileName")
	arn := a.inst.InstanceProfileARN
	if arn == "" || !strings.HasSuffix(arn, "/"+name) {
		writeAWSError(w, http.StatusNotFound, "NoSuchEntity", "Instance Profile "+name+" cannot be found.")
		return
	}
	resp := getInstanceProfileResponse{Name: name, Arn: arn}
	for _, role := range a.inst.RoleARNs {
		resp.Roles = append(resp.Roles, iamRole{RoleName: role[strings.LastIndex(role, "/")+1:], Arn: role})
	}
	w.Header().Set("Content-Type", "text/xml")
	_ = xml.NewEncoder(w).Encode(resp)
}
