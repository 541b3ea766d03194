/* report.js - the summary and the evaluation of an esg-render --html page,
 * drawn from the page's esg-data (report.c put_data): methods x metrics
 * matrices, the randomisation sanity-check curves (Adebayo et al. 2018),
 * deletion / insertion curves, and a one-screen summary.  Plain ES5, no
 * library, nothing fetched. */
(function(){'use strict';
/* the SVG namespace, from the HTML parser (the page names no address) */
var NS=(function(){var d=document.createElement('div');d.innerHTML='<svg></svg>';return d.firstChild.namespaceURI;})();
/* higher (1) or lower (-1) is better; the families of metrics */
var BETTER={mass_in_mask:1,pointing_game:1,auroc:1,insertion:1,deletion:-1,infidelity:-1,max_sensitivity:-1};
var GT={mass_in_mask:1,pointing_game:1,auroc:1};
var FAITH={infidelity:1,max_sensitivity:1,deletion:1,insertion:1};
var SIM={spearman:1,spearman_abs:1,ssim:1,ssim_abs:1,topk_iou:1};
var SIMNAME={spearman:'Spearman',spearman_abs:'Spearman |\u00b7|',ssim:'SSIM',ssim_abs:'SSIM |\u00b7|',topk_iou:'top-k IoU'};
var ORDER=['mass_in_mask','pointing_game','auroc','deletion','insertion','infidelity','max_sensitivity'];
/* Okabe & Ito's colour-blind-safe palette, then dashes for more lines */
var PAL=['#0072B2','#E69F00','#009E73','#CC79A7','#56B4E9','#D55E00','#000000','#999999'];
var DASH=['','7 3','2 3','9 3 2 3'];
var VIRIDIS=[[68,1,84],[72,40,120],[62,74,137],[49,104,142],[38,130,142],[31,158,137],[53,183,121],
 [109,205,89],[180,222,44],[253,231,37]];
/* a method is flagged when, from step k on, its similarity to the original
 * stays within FLAT of the value at k while that value is at least HIGH */
var FLAT=0.05,HIGH=0.5;

function viridis(t){t=Math.max(0,Math.min(1,t))*(VIRIDIS.length-1);
 var i=Math.min(Math.floor(t),VIRIDIS.length-2),f=t-i,a=VIRIDIS[i],b=VIRIDIS[i+1];
 return [0,1,2].map(function(k){return Math.round(a[k]+f*(b[k]-a[k]));});}
function el(tag,attrs,kids){
 var svg=/^(svg|g|line|polyline|circle|text|title|path|rect)$/.test(tag);
 var e=svg?document.createElementNS(NS,tag):document.createElement(tag);
 for(var k in attrs||{})if(attrs[k]!==undefined&&attrs[k]!==null)e.setAttribute(k,attrs[k]);
 (kids||[]).forEach(function(c){if(c!==null&&c!==undefined)e.appendChild(typeof c==='string'?document.createTextNode(c):c);});
 return e;}
function num(s){s=String(s).trim();
 if(/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s))return parseFloat(s);
 if(/^[-+]?inf(inity)?$/i.test(s))return s[0]=='-'?-Infinity:Infinity;return NaN;}
function fmt(v){if(!isFinite(v))return String(v);var a=Math.abs(v);
 if(a!==0&&(a<1e-3||a>=1e5))return v.toExponential(2);return String(+v.toPrecision(3));}
function uniq(a){var s={},o=[];a.forEach(function(x){if(!(x in s)){s[x]=1;o.push(x);}});return o;}
function mean(a){a=a.filter(isFinite);return a.length?a.reduce(function(x,y){return x+y;},0)/a.length:NaN;}
function baseName(p){p=String(p).replace(/^.*\//,'');
 return p.replace(/(\.st\.zst|\.nii\.gz|\.nii|\.png|\.npy)$/,'');}

var D=JSON.parse(document.getElementById('esg-data').textContent);
var BASE=D.base||'';
function rel(p){return BASE&&p.indexOf(BASE+'/')===0?p.slice(BASE.length+1):p;}
/* records by file and record number (and by file alone) */
var REC={},REC1={};
D.records.forEach(function(r){if(!r.file)return;REC[r.file+'\t'+r.record]=r;if(!(r.file in REC1))REC1[r.file]=r;});
function place(src,record,method){
 var r=REC[src+'\t'+record]||REC1[src];
 if(r)return {input:r.input,model:r.model,method:r.method,dir:r.dir,step:r.step,step_name:r.step_name};
 var m=/step-(\d+)[^\/]*$/.exec(src);
 return {input:baseName(src),model:'',method:method,dir:m?src.replace(/\/[^\/]*$/,''):undefined,
  step:m?+m[1]:undefined,step_name:m?m[1]:undefined};}

/* the tables by their columns */
var METRIC=[],CURVE=[],JOBS=null;
D.tables.forEach(function(t){
 var h=t.rows[0],c={};h.forEach(function(n,i){c[n]=i;});
 var rows=t.rows.slice(1);
 if('source' in c&&'metric' in c&&'value' in c&&'method' in c){
  rows.forEach(function(r){
   var rec='record' in c?r[c.record]:'0',p=place(r[c.source],rec,r[c.method]);
   METRIC.push({table:t.name,src:r[c.source],input:p.input,model:p.model,method:p.method,dir:p.dir,step:p.step,
    step_name:p.step_name,metric:r[c.metric],value:num(r[c.value]),text:r[c.value],
    params:'params' in c?r[c.params]:'',mparams:'metric_params' in c?r[c.metric_params]:'',
    item:'item' in c?r[c.item]:'0',record:rec});});
 }else if('curve' in c&&'fraction' in c&&'normalised' in c&&'source' in c){
  rows.forEach(function(r){
   var rec='record' in c?r[c.record]:'0',p=place(r[c.source],rec,'method' in c?r[c.method]:'');
   CURVE.push({input:p.input,model:p.model,method:p.method,curve:r[c.curve],x:num(r[c.fraction]),
    y:num(r[c.normalised]),key:r[c.source]+'\t'+rec+'\t'+('item' in c?r[c.item]:'0')});});
 }else if('job' in c&&'status' in c&&'wall_s' in c){
  JOBS={rows:rows,c:c};
 }});

/* ---- methods x metrics ------------------------------------------------- */
var MAT=[];   /* {input, model, methods[], metrics[], cell[method][metric] = {v, rows}} */
(function(){
 var groups={},order=[];
 METRIC.forEach(function(r){if(r.step!==undefined)return;
  var k=r.input+'\u0001'+r.model;
  if(!groups[k]){groups[k]={input:r.input,model:r.model,rows:[]};order.push(k);}
  groups[k].rows.push(r);});
 order.forEach(function(k){var g=groups[k];
  var metrics=uniq(g.rows.map(function(r){return r.metric;}));
  metrics.sort(function(a,b){var i=ORDER.indexOf(a),j=ORDER.indexOf(b);
   return (i<0?99:i)-(j<0?99:j)||(a<b?-1:a>b?1:0);});
  g.methods=uniq(g.rows.map(function(r){return r.method;}));g.metrics=metrics;g.cell={};
  g.rows.forEach(function(r){var c=g.cell[r.method]=g.cell[r.method]||{};
   (c[r.metric]=c[r.metric]||{rows:[]}).rows.push(r);});
  g.methods.forEach(function(m){metrics.forEach(function(x){var c=g.cell[m][x];
   if(c)c.v=mean(c.rows.map(function(r){return r.value;}));});});
  MAT.push(g);});
})();

/* the rank of each method per (group, metric) with a direction; averaged
 * over the metrics of a family: the summary's best methods */
function best(family){
 var sum={},cnt={};
 MAT.forEach(function(g){g.metrics.forEach(function(x){if(!family[x]||!BETTER[x])return;
  var vals=g.methods.map(function(m){var c=g.cell[m][x];return {m:m,v:c?c.v:NaN};})
   .filter(function(o){return isFinite(o.v);});
  vals.forEach(function(o){var below=0,same=0;
   vals.forEach(function(p){var d=BETTER[x]*(p.v-o.v);if(d>0)below++;else if(d===0)same++;});
   var rank=below+(same+1)/2;sum[o.m]=(sum[o.m]||0)+rank;cnt[o.m]=(cnt[o.m]||0)+1;});});});
 return Object.keys(sum).map(function(m){return {m:m,r:sum[m]/cnt[m],n:cnt[m]};})
  .sort(function(a,b){return a.r-b.r||(a.m<b.m?-1:1);});}

function matrixTable(g,gi){
 var cols=[];g.metrics.forEach(function(x){var vs=g.methods.map(function(m){var c=g.cell[m][x];return c?c.v:NaN;})
  .filter(isFinite);cols.push({x:x,lo:Math.min.apply(null,vs),hi:Math.max.apply(null,vs)});});
 var head=el('tr',{},[el('th',{scope:'col','class':'method','aria-sort':'none','data-col':'method'},
  [el('button',{type:'button',title:'sort by method'},['method'])])]);
 cols.forEach(function(c){var b=BETTER[c.x];
  head.appendChild(el('th',{scope:'col','data-metric':c.x,'data-better':b>0?'higher':b<0?'lower':'',
   'aria-sort':'none'},[el('button',{type:'button',title:'sort: '+(b?'best first':'largest first')},[c.x]),
   el('span',{'class':'better'},[b>0?'\u2191 higher is better':b<0?'\u2193 lower is better':'no direction'])]));});
 var body=el('tbody');
 g.methods.forEach(function(m){
  var tr=el('tr',{'data-method':m},[el('th',{scope:'row','class':'method'},[m])]);
  cols.forEach(function(c){var cell=g.cell[m][c.x];
   if(!cell||!isFinite(cell.v)){tr.appendChild(el('td',{'class':'nan','data-metric':c.x,'data-value':cell?String(cell.v):'',
    title:c.x+': '+(cell?cell.rows.map(function(r){return r.text;}).join(', '):'not computed')},[cell?'nan':'\u2014']));return;}
   var t=c.hi>c.lo?(cell.v-c.lo)/(c.hi-c.lo):0.5;if(BETTER[c.x]<0)t=1-t;
   var rgb=viridis(t),r0=cell.rows[0];
   var tip=m+' \u00b7 '+c.x+' = '+cell.v.toPrecision(9)+(cell.rows.length>1?' (mean of '+cell.rows.length+' items)':'')+
    '\nmethod parameters: '+(r0.params||'{}')+'\nmetric parameters: '+(r0.mparams||'{}')+'\nfrom '+rel(r0.src);
   tr.appendChild(el('td',{'data-metric':c.x,'data-value':String(cell.v),title:tip,tabindex:'0',
    style:'background:rgb('+rgb.join(',')+');color:'+(t>0.55?'#000':'#fff')},[fmt(cell.v)]));});
  body.appendChild(tr);});
 var tab=el('table',{'class':'matrix',id:'matrix-'+gi,'data-input':g.input,'data-model':g.model},[
  el('caption',{},[g.input+(g.model?' \u00b7 '+g.model:'')]),el('thead',{},[head]),body]);
 head.querySelectorAll('th').forEach(function(th,col){th.querySelector('button').addEventListener('click',function(){
  sortMatrix(tab,th,col);});});
 return tab;}

function sortMatrix(tab,th,col){
 var b=th.dataset.better,cur=th.getAttribute('aria-sort');
 /* first press: best first (a metric with no direction: largest first; methods: a to z) */
 var first=col===0?'ascending':b==='lower'?'ascending':'descending';
 var dir=cur===first?(first==='ascending'?'descending':'ascending'):first;
 tab.tHead.querySelectorAll('th').forEach(function(h){h.setAttribute('aria-sort','none');});
 th.setAttribute('aria-sort',dir);
 var s=dir==='ascending'?1:-1,rows=Array.prototype.slice.call(tab.tBodies[0].rows);
 rows.forEach(function(r,i){r.dataset.i=i;});
 rows.sort(function(a,b){
  if(col===0){var x=a.dataset.method,y=b.dataset.method;return s*(x<y?-1:x>y?1:0);}
  var u=parseFloat(a.cells[col].dataset.value),v=parseFloat(b.cells[col].dataset.value);
  if(isNaN(u)||isNaN(v))return isNaN(u)-isNaN(v)||a.dataset.i-b.dataset.i;   /* nan last either way */
  return s*(u<v?-1:u>v?1:0)||a.dataset.i-b.dataset.i;});
 rows.forEach(function(r){tab.tBodies[0].appendChild(r);});}

/* ---- line charts --------------------------------------------------------- */
/* an axis from lo to hi in round steps (1, 2, 2.5 or 5 times a power of ten) */
function nice(lo,hi){if(!(hi>lo))hi=lo+1;var r=(hi-lo)/4,p=Math.pow(10,Math.floor(Math.log(r)/Math.LN10)),st=p;
 [1,2,2.5,5,10].some(function(m){st=m*p;return m*p>=r;});
 return {lo:Math.floor(lo/st+1e-9)*st,hi:Math.ceil(hi/st-1e-9)*st,step:st};}
function chart(o){  /* o: {w,h,x0,x1,y0,y1,xticks:[[x,label]],ylabel,xlabel,lines:[{name,xs,ys,i}]} */
 var W=o.w||440,H=o.h||280,L=52,R=34,T=10,B=o.bottom||46,ax=nice(o.y0,o.y1);o.y0=ax.lo;o.y1=ax.hi;
 function X(x){return L+(o.x1>o.x0?(x-o.x0)/(o.x1-o.x0):0.5)*(W-L-R);}
 function Y(y){return T+(1-(y-o.y0)/(o.y1-o.y0))*(H-T-B);}
 var svg=el('svg',{'class':'plot',width:W,height:H,viewBox:'0 0 '+W+' '+H,role:'img','aria-label':o.label,
  'data-x0':L,'data-x1':W-R,'data-y0':H-B,'data-y1':T,'data-vmin':o.y0,'data-vmax':o.y1},[el('title',{},[o.label])]);
 for(var yv=o.y0;yv<=o.y1+ax.step/2;yv+=ax.step){
  svg.appendChild(el('line',{'class':'grid',x1:L,x2:W-R,y1:Y(yv),y2:Y(yv)}));
  svg.appendChild(el('text',{x:L-4,y:Y(yv)+4,'text-anchor':'end'},[fmt(+yv.toPrecision(3))]));}
 svg.appendChild(el('polyline',{'class':'axis',points:L+','+T+' '+L+','+(H-B)+' '+(W-R)+','+(H-B)}));
 (o.xticks||[]).forEach(function(t){svg.appendChild(el('text',{x:X(t[0]),y:H-B+14,'text-anchor':'middle'},[t[1]]));});
 svg.appendChild(el('text',{x:(L+W-R)/2,y:H-6,'text-anchor':'middle'},[o.xlabel]));
 svg.appendChild(el('text',{x:12,y:(T+H-B)/2,'text-anchor':'middle',transform:'rotate(-90 12 '+(T+H-B)/2+')'},[o.ylabel]));
 o.lines.forEach(function(ln){var col=PAL[ln.i%PAL.length],dash=DASH[Math.floor(ln.i/PAL.length)%DASH.length];
  var pts=ln.xs.map(function(x,j){return X(x).toFixed(2)+','+Y(ln.ys[j]).toFixed(2);}).join(' ');
  var g=el('g',{'data-method':ln.name},[el('polyline',{points:pts,stroke:col,'stroke-dasharray':dash||null,
   'data-method':ln.name,'data-values':ln.ys.map(String).join(' '),'data-xs':ln.xs.map(String).join(' ')},
   [el('title',{},[ln.name])])]);
  if(ln.dots)ln.xs.forEach(function(x,j){g.appendChild(el('circle',{cx:X(x),cy:Y(ln.ys[j]),r:3.5,fill:col},
   [el('title',{},[ln.name+' \u00b7 '+ln.tip(j)])]));});
  svg.appendChild(g);});
 return svg;}
function swatch(i){var col=PAL[i%PAL.length],dash=DASH[Math.floor(i/PAL.length)%DASH.length];
 return el('svg',{width:28,height:10,'aria-hidden':'true'},[el('line',{x1:1,x2:27,y1:5,y2:5,stroke:col,'stroke-width':3,
  'stroke-dasharray':dash||null})]);}

/* ---- the randomisation sanity check --------------------------------------- */
var SAN=[];   /* {input, dir, model, metrics[], methods[], steps[], names{}, val[method][metric][step]} */
(function(){
 var groups={},order=[];
 METRIC.forEach(function(r){if(r.step===undefined||!isFinite(r.step))return;
  var k=r.input+'\u0001'+r.dir;
  if(!groups[k]){groups[k]={input:r.input,dir:r.dir,rows:[],names:{}};order.push(k);}
  groups[k].rows.push(r);groups[k].names[r.step]=r.step_name;});
 order.forEach(function(k){var g=groups[k];
  g.metrics=uniq(g.rows.map(function(r){return r.metric;}));
  g.methods=uniq(g.rows.map(function(r){return r.method;}));
  g.steps=uniq(g.rows.map(function(r){return r.step;})).sort(function(a,b){return a-b;});
  var acc={};g.rows.forEach(function(r){var a=acc[r.method+'\t'+r.metric+'\t'+r.step]=acc[r.method+'\t'+r.metric+'\t'+r.step]||[];
   a.push(r.value);});
  g.val=function(m,x,s){var a=acc[m+'\t'+x+'\t'+s];return a?mean(a):NaN;};
  SAN.push(g);});
})();

/* The first step k (0: the original, similarity 1) from which every later
 * similarity stays within FLAT of the one at k, that one at least HIGH,
 * with at least min(2, steps) steps after it; -1 if none. */
function plateau(ys){
 var v=[1].concat(ys),n=ys.length,need=Math.min(2,n);
 for(var k=0;k+need<=n;k++){if(!(v[k]>=HIGH))continue;var flat=true;
  for(var j=k+1;j<=n;j++)if(!(Math.abs(v[j]-v[k])<=FLAT)){flat=false;break;}
  if(flat)return k;}
 return -1;}
function flagText(m,k,g){return m+' does not depend on the weights beyond step '+k+
 (k===0?' (its maps stay as similar to the original at every step)':' ('+(g.names[k]||k)+')');}

function sanityFigure(g,gi){
 var fig=el('div',{'class':'sanity','data-input':g.input,'data-dir':g.dir});
 var pref=['spearman_abs','ssim_abs','topk_iou','spearman','ssim'].filter(function(x){return g.metrics.indexOf(x)>=0;});
 var metrics=pref.concat(g.metrics.filter(function(x){return pref.indexOf(x)<0;}));
 var id='sim-'+gi,sel=el('select',{'class':'evsel',id:id},metrics.map(function(x){
  return el('option',{value:x},[SIMNAME[x]||x]);}));
 var hold=el('div');
 fig.appendChild(el('p',{},[el('label',{'for':id},['similarity to the original map: ']),sel,
  el('span',{'class':'evsel-print'},[])]));
 fig.appendChild(hold);
 function draw(){var x=sel.value,lines=[],flags=[];
  sel.parentNode.querySelector('.evsel-print').textContent=SIMNAME[x]||x;
  var lo=0;
  g.methods.forEach(function(m,i){var xs=[],ys=[];
   g.steps.forEach(function(s){var v=g.val(m,x,s);if(!isNaN(v)){xs.push(s);ys.push(v);}});
   if(!xs.length)return;
   ys.forEach(function(v){if(isFinite(v)&&v<lo)lo=v;});
   var k=xs.length===g.steps.length?plateau(ys):-1;
   lines.push({name:m,xs:xs,ys:ys,i:i,dots:true,flag:k,tip:function(j){return 'step '+(g.names[xs[j]]||xs[j])+': '+
    (SIMNAME[x]||x)+' = '+ys[j].toPrecision(6);}});});
  var svg=chart({label:(SIMNAME[x]||x)+' of each method\u2019s map to the original\u2019s, '+g.input+' \u00b7 '+g.dir,
   x0:g.steps[0],x1:g.steps[g.steps.length-1],y0:lo,y1:1,xlabel:'randomised from the top down to \u2192',
   ylabel:SIMNAME[x]||x,bottom:60,w:Math.max(420,100+75*g.steps.length),
   xticks:g.steps.map(function(s){return [s,String(g.names[s]||s).replace(/^0*(\d+) /,'$1 ')];}),lines:lines});
  var leg=el('ul',{'class':'key'}),fl=el('ul',{'class':'flags'});
  lines.forEach(function(ln){leg.appendChild(el('li',{'data-method':ln.name},[swatch(ln.i),ln.name+
   ' (last step: '+fmt(ln.ys[ln.ys.length-1])+')']));
   if(ln.flag>=0)fl.appendChild(el('li',{'class':'flag','data-method':ln.name,'data-step':ln.flag},
    ['\u26a0 '+flagText(ln.name,ln.flag,g)]));});
  hold.textContent='';
  hold.appendChild(el('div',{'class':'charts'},[el('figure',{'class':'chart'},[svg,
   el('figcaption',{},['Cascading randomisation (Adebayo et al. 2018): similarity falls if the map depends on the weights'])]),
   el('div',{},[leg,fl.childNodes.length?fl:el('p',{'class':'ok'},['every method\u2019s maps change as the layers are randomised'])])]));}
 sel.addEventListener('change',draw);draw();
 return fig;}

/* ---- deletion / insertion ------------------------------------------------ */
function trapz(xs,ys){var a=0;for(var i=1;i<xs.length;i++)a+=(xs[i]-xs[i-1])*(ys[i]+ys[i-1])/2;return a;}
function curveFigures(){
 var groups={},order=[];
 CURVE.forEach(function(r){var k=r.input+'\u0001'+r.model+'\u0001'+r.curve;
  if(!groups[k]){groups[k]={input:r.input,model:r.model,curve:r.curve,lines:{},names:[]};order.push(k);}
  var g=groups[k],lk=r.key;
  if(!g.lines[lk]){g.lines[lk]={method:r.method,xs:[],ys:[]};g.names.push(lk);}
  if(isFinite(r.y)){g.lines[lk].xs.push(r.x);g.lines[lk].ys.push(r.y);}});
 return order.map(function(k,gi){var g=groups[k];
  var methods=g.names.map(function(lk){return g.lines[lk].method;});
  var lines=g.names.map(function(lk,i){var ln=g.lines[lk],dup=methods.filter(function(m){return m===ln.method;}).length>1;
   var name=ln.method+(dup?' #'+(i+1):''),auc=trapz(ln.xs,ln.ys);
   return {name:name,xs:ln.xs,ys:ln.ys,i:i,auc:auc,dots:false};});
  var lo=0,hi=1;lines.forEach(function(l){l.ys.forEach(function(y){lo=Math.min(lo,y);hi=Math.max(hi,y);});});
  var svg=chart({label:g.curve+' curves, '+g.input+(g.model?' \u00b7 '+g.model:''),x0:0,x1:1,y0:lo,y1:hi,
   xlabel:'fraction of the input '+(g.curve==='deletion'?'removed (most attributed first)':'inserted (most attributed first)'),
   ylabel:'normalised score',xticks:[[0,'0'],[0.25,'0.25'],[0.5,'0.5'],[0.75,'0.75'],[1,'1']],lines:lines});
  var leg=el('ul',{'class':'key'});
  lines.slice().sort(function(a,b){return g.curve==='deletion'?a.auc-b.auc:b.auc-a.auc;}).forEach(function(l){
   leg.appendChild(el('li',{'data-method':l.name,'data-auc':String(l.auc)},[swatch(l.i),l.name+': area '+fmt(l.auc)]));});
  return el('div',{'class':'curves','data-input':g.input,'data-model':g.model,'data-curve':g.curve},[
   el('figure',{'class':'chart'},[svg,el('figcaption',{},[g.curve+' (Petsiuk et al. 2018): area '+
    (g.curve==='deletion'?'lower':'higher')+' is better'])]),leg]);});}

/* ---- summary -------------------------------------------------------------- */
function summary(flagged){
 var s=document.getElementById('summary');if(!s)return;
 var grid=D.records.filter(function(r){return !r.dir;});
 var inputs=uniq(grid.map(function(r){return r.input;}).concat(MAT.map(function(g){return g.input;})));
 var models=uniq(grid.map(function(r){return r.model;}).concat(MAT.map(function(g){return g.model;}))).filter(Boolean);
 var methods=uniq(grid.map(function(r){return r.method;}).concat(METRIC.filter(function(r){return r.step===undefined;})
  .map(function(r){return r.method;})));
 function card(n,what,list,cls){return el('div',{'class':'card'+(cls?' '+cls:''),title:list||''},[el('b',{},[String(n)]),what]);}
 var cards=el('div',{'class':'cards'},[card(inputs.length,inputs.length===1?'input':'inputs',inputs.join(', ')),
  card(models.length,models.length===1?'model':'models',models.join(', ')),
  card(methods.length,methods.length===1?'method':'methods',methods.join(', '))]);
 if(JOBS){var c=JOBS.c,st={ok:0,failed:0,timed:0,killed:0},t0=Infinity,t1=-Infinity,cpu=0;
  JOBS.rows.forEach(function(r){var x=r[c.status];
   if(x==='ok')st.ok++;else if(/^timed/.test(x))st.timed++;else if(/^killed/.test(x))st.killed++;else st.failed++;
   var w=num(r[c.wall_s]);if(isFinite(w))cpu+=w;
   if('started' in c){var t=Date.parse(r[c.started]);if(isFinite(t)){t0=Math.min(t0,t/1000);t1=Math.max(t1,t/1000+(isFinite(w)?w:0));}}});
  cards.appendChild(card(st.ok,'jobs ok'));
  cards.appendChild(card(st.failed+st.killed,'jobs failed'+(st.killed?' (of which '+st.killed+' killed)':''),'',st.failed+st.killed?'bad':''));
  cards.appendChild(card(st.timed,'jobs timed out','',st.timed?'bad':''));
  if(t1>t0)cards.appendChild(card(fmt(+(t1-t0).toFixed(1))+' s','wall time: first job\u2019s start to last job\u2019s end (of every run that made these outputs)'));
  cards.appendChild(card(fmt(+cpu.toFixed(1))+' s','job time (sum over '+JOBS.rows.length+' jobs)'));}
 s.appendChild(el('h2',{},['Summary']));s.appendChild(cards);
 var lists=el('div',{'class':'best'});
 [['ground truth (mass in mask, pointing game, AUROC)',GT],['faithfulness (deletion, insertion, infidelity, max-sensitivity)',FAITH]]
 .forEach(function(f){var b=best(f[1]);if(!b.length)return;
  lists.appendChild(el('div',{'class':'bestlist','data-family':f[1]===GT?'ground_truth':'faithfulness'},
   [el('h3',{},['Best on '+f[0]]),el('ol',{},b.slice(0,3).map(function(o){
   return el('li',{'data-method':o.m},[o.m+' \u2014 mean rank '+fmt(o.r)+' over '+o.n+' score'+(o.n>1?'s':''),
    flagged[o.m]?el('span',{'class':'flag'},[' \u26a0 failed the randomisation check']):null]);}))]));});
 if(lists.childNodes.length){s.appendChild(lists);
  s.appendChild(el('p',{'class':'caveat'},['Caveats: ranks are among the methods of this run only, per input and model, '+
   'averaged over the metrics of a family with equal weight; '+MAT.length+' input \u00d7 model combination'+
   (MAT.length===1?'':'s')+' scored. Agreement with a mask says where the model looks, not whether it is right; '+
   'infidelity and max-sensitivity depend on the perturbations chosen (see each value\u2019s parameters); deletion and insertion '+
   'measure the model on inputs it never saw. A method that fails the randomisation check explains the input, not the model, '+
   'however well it scores.']));}
 var fl=Object.keys(flagged);
 if(fl.length)s.appendChild(el('p',{'class':'flag'},['\u26a0 Randomisation check: '+fl.map(function(m){return flagged[m];}).join('; ')+'.']));}

/* ---- the evaluation section --------------------------------------------- */
var ev=document.getElementById('evaluation'),flagged={};
if(ev&&(MAT.length||SAN.length||CURVE.length)){
 ev.appendChild(el('h2',{},['Evaluation']));
 if(MAT.length){
  ev.appendChild(el('h3',{id:'matrix'},['Methods \u00d7 metrics']));
  ev.appendChild(el('p',{'class':'meta'},['One row per method; each column coloured from its worst (dark) to its best (yellow) value ',
   el('span',{'class':'scale','aria-hidden':'true'}),' (viridis); hover or focus a value for the exact number and the parameters; '+
   'press a column header to sort, best first.']));
  MAT.forEach(function(g,i){ev.appendChild(matrixTable(g,i));});}
 if(SAN.length){
  ev.appendChild(el('h3',{id:'sanity'},['Randomisation sanity check']));
  ev.appendChild(el('p',{'class':'meta'},['Maps of models whose layers were randomised from the output down, compared with the original '+
   'model\u2019s map. A method is flagged when from some step on its similarity stays within '+FLAT+' of that step\u2019s while at least '+
   HIGH+': randomising more weights no longer changes its maps.']));
  SAN.forEach(function(g,i){var f=sanityFigure(g,i);ev.appendChild(f);
   /* flags for the summary: on the first metric shown */
   f.querySelectorAll('li.flag').forEach(function(li){flagged[li.dataset.method]=li.textContent.replace(/^\u26a0 /,'');});});}
 var cf=curveFigures();
 if(cf.length){ev.appendChild(el('h3',{id:'curves'},['Deletion and insertion']));
  ev.appendChild(el('div',{'class':'charts'},cf));}
}
summary(flagged);
})();
